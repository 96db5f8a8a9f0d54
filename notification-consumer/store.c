/* The copy in MongoDB (or FerretDB) through a client pool: mongoc_client_t is not thread-safe. */
#include "store.h"

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "failpoint.h"
#include "log.h"
#include "mongo_driver.h"
#include "util.h"

#define DUPLICATE_KEY 11000
#define NAMESPACE_NOT_FOUND 26

/* Users whose document is known to have the history entry of the event it holds: written by
 * this process, or checked once. Only their first event in a process's life pays the check. */
struct idset {
	int64_t *slots;		/* 0 is free; user ids are positive */
	size_t cap, len;
};

struct store {
	mongoc_client_pool_t *pool;
	mongoc_uri_t *uri;
	char *db, *collection, *history;
	char instance[64];	/* applied_by of what this process writes */
	pthread_mutex_t lock;	/* guards verified */
	struct idset verified;
};

static size_t
idset_slot(const struct idset *set, int64_t id)
{
	uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ULL;
	size_t i = (size_t)(h >> 20) & (set->cap - 1);

	while (set->slots[i] != 0 && set->slots[i] != id)
		i = (i + 1) & (set->cap - 1);
	return i;
}

static bool
idset_has(const struct idset *set, int64_t id)
{
	return set->cap > 0 && set->slots[idset_slot(set, id)] == id;
}

static void
idset_add(struct idset *set, int64_t id)
{
	size_t i;

	if (set->len + 1 > set->cap / 2) {
		struct idset bigger = { NULL, set->cap ? set->cap * 2 : 1024, 0 };

		bigger.slots = calloc(bigger.cap, sizeof(*bigger.slots));
		if (bigger.slots == NULL)
			return;	/* only costs a check later */
		for (size_t j = 0; j < set->cap; j++)
			if (set->slots[j] != 0)
				bigger.slots[idset_slot(&bigger, set->slots[j])] = set->slots[j];
		bigger.len = set->len;
		free(set->slots);
		*set = bigger;
	}
	i = idset_slot(set, id);
	if (set->slots[i] == 0) {
		set->slots[i] = id;
		set->len++;
	}
}

/* Removal by rebuilding is rare (a failed write), so keep it simple. */
static void
idset_remove(struct idset *set, int64_t id)
{
	struct idset copy = *set;

	if (!idset_has(set, id))
		return;
	set->slots = calloc(copy.cap, sizeof(*set->slots));
	if (set->slots == NULL) {
		*set = copy;
		return;
	}
	set->len = 0;
	for (size_t j = 0; j < copy.cap; j++)
		if (copy.slots[j] != 0 && copy.slots[j] != id) {
			set->slots[idset_slot(set, copy.slots[j])] = copy.slots[j];
			set->len++;
		}
	free(copy.slots);
}

static bool
verified_has(struct store *s, int64_t id)
{
	bool has;

	pthread_mutex_lock(&s->lock);
	has = idset_has(&s->verified, id);
	pthread_mutex_unlock(&s->lock);
	return has;
}

static void
verified_set(struct store *s, int64_t id, bool on)
{
	pthread_mutex_lock(&s->lock);
	if (on)
		idset_add(&s->verified, id);
	else
		idset_remove(&s->verified, id);
	pthread_mutex_unlock(&s->lock);
}

static void
error_text(const bson_error_t *e, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s", e->message[0] ? e->message : "unknown error");
}

struct store *
store_new(const struct store_config *c, char *err, size_t errlen)
{
	struct store *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	/* The timeouts let the loop back off instead of waiting 30 s for a server that is down; no
	 * message shows the URI's password. */
	s->uri = mongo_uri_parse(c->uri, c->timeout_ms, c->appname, err, errlen);
	if (s->uri == NULL)
		goto fail;
	s->pool = mongoc_client_pool_new(s->uri);
	if (s->pool == NULL) {
		snprintf(err, errlen, "could not make a MongoDB client pool");
		goto fail;
	}
	mongoc_client_pool_set_error_api(s->pool, MONGOC_ERROR_API_VERSION_2);
	s->db = strdup(c->db);
	s->collection = strdup(c->collection);
	s->history = strdup(c->history);
	if (s->db == NULL || s->collection == NULL || s->history == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (c->instance != NULL)
		snprintf(s->instance, sizeof(s->instance), "%s", c->instance);
	else
		uuid_new(s->instance);
	return s;
fail:
	store_free(s);
	return NULL;
}

const char *
store_instance(const struct store *s)
{
	return s->instance;
}

void
store_free(struct store *s)
{
	if (s == NULL)
		return;
	if (s->pool != NULL)
		mongoc_client_pool_destroy(s->pool);
	mongoc_uri_destroy(s->uri);
	free(s->db);
	free(s->collection);
	free(s->history);
	free(s->verified.slots);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int
store_ping(struct store *s, char *err, size_t errlen)
{
	mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
	bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
	bson_error_t e;
	bool ok;

	ok = mongoc_client_command_simple(cl, "admin", cmd, NULL, NULL, &e);
	bson_destroy(cmd);
	mongoc_client_pool_push(s->pool, cl);
	if (!ok) {
		char why[256];

		error_text(&e, why, sizeof(why));
		snprintf(err, errlen, "could not reach MongoDB: %s", why);
		return -1;
	}
	return 0;
}

static int
db_command(struct store *s, const char *dbname, bson_t *cmd, bson_t *reply, bson_error_t *e)
{
	mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
	mongoc_database_t *db = mongoc_client_get_database(cl, dbname);
	bool ok;

	ok = mongoc_database_write_command_with_opts(db, cmd, NULL, reply, e);
	mongoc_database_destroy(db);
	mongoc_client_pool_push(s->pool, cl);
	return ok ? 0 : -1;
}

/* Creates one index; FerretDB 1.24 drops the connection when one createIndexes names several
 * indexes that all exist already, so each goes in a command of its own. */
static int
create_index(struct store *s, bson_t *index, char *err, size_t errlen)
{
	bson_t *cmd = bson_new(), arr, reply;
	bson_error_t e;
	int rc;

	BSON_APPEND_UTF8(cmd, "createIndexes", s->history);
	BSON_APPEND_ARRAY_BEGIN(cmd, "indexes", &arr);
	BSON_APPEND_DOCUMENT(&arr, "0", index);
	bson_append_array_end(cmd, &arr);
	rc = db_command(s, s->db, cmd, &reply, &e);
	bson_destroy(cmd);
	bson_destroy(&reply);
	bson_destroy(index);
	if (rc != 0) {
		char why[256];

		error_text(&e, why, sizeof(why));
		snprintf(err, errlen, "could not create the indexes of %s.%s: %s", s->db, s->history, why);
		return -1;
	}
	return 0;
}

int
store_prepare(struct store *s, char *err, size_t errlen)
{
	if (create_index(s, BCON_NEW("key", "{", "event_id", BCON_INT32(1), "}",
	    "name", BCON_UTF8("event_id_unique"), "unique", BCON_BOOL(true)), err, errlen) != 0)
		return -1;
	return create_index(s, BCON_NEW("key", "{", "user_id", BCON_INT32(1), "version", BCON_INT32(1),
	    "}", "name", BCON_UTF8("user_id_version")), err, errlen);
}

void
store_library_init(void)
{
	mongo_driver_init();
}

void
store_library_cleanup(void)
{
	mongo_driver_cleanup();
}

static int64_t
reply_int(const bson_t *reply, const char *key)
{
	bson_iter_t it;

	if (bson_iter_init_find(&it, reply, key) && BSON_ITER_HOLDS_NUMBER(&it))
		return bson_iter_as_int64(&it);
	return 0;
}

/* Counts a second effect of ev on its history entry: the copy took this event again although
 * the entry was written before (another writer had taken the copy back, or a duplicate found it
 * behind). Without this the unique event_id would hide every effect after the first. An effect is
 * one write, named by who made it and when (instance, applied_at, which the document carries
 * too): one the entry already names is not counted again. That is the case when this process
 * stopped between its write and this call, longer than the lease, and the process that took over
 * found the event in the document and wrote its entry from there: one effect, written down by
 * the other process, not a second one. */
static bool
history_count_reapplied(mongoc_collection_t *coll, const struct event *ev, uint64_t stream_seq,
    const char *applied_at, const char *instance, bson_error_t *e)
{
	bson_t *filter = BCON_NEW("_id", BCON_UTF8(ev->event_id), "$nor", "[",
	    "{", "applied_by", BCON_UTF8(instance), "applied_at", BCON_UTF8(applied_at), "}",
	    "{", "reapplied_by", BCON_UTF8(instance), "reapplied_at", BCON_UTF8(applied_at), "}",
	    "]");
	bson_t *update = BCON_NEW("$inc", "{", "reapplied", BCON_INT32(1), "}",
	    "$set", "{", "reapplied_at", BCON_UTF8(applied_at), "reapplied_by", BCON_UTF8(instance),
	    "reapplied_seq", BCON_INT64((int64_t)stream_seq), "}");
	bool ok = mongoc_collection_update_one(coll, filter, update, NULL, NULL, e);

	bson_destroy(filter);
	bson_destroy(update);
	return ok;
}

/* The history entry of ev, as this process writes it: a new document the caller bson_destroy()s.
 * It holds ev's name and email only with personal, and never a deletion's (which has none). */
static bson_t *
history_entry(const struct store *s, const struct event *ev, int64_t published_us,
    uint64_t stream_seq, const char *applied_at, bool superseded, bool personal)
{
	char published_at[32];
	bson_t *doc;

	rfc3339_us(published_us, published_at);
	doc = BCON_NEW("_id", BCON_UTF8(ev->event_id), "event_id", BCON_UTF8(ev->event_id),
	    "user_id", BCON_INT64(ev->user_id), "version", BCON_INT64(ev->version),
	    "type", BCON_UTF8(ev->type),
	    "updated_at", BCON_UTF8(ev->updated_at), "deleted", BCON_BOOL(ev->deleted),
	    "committed_at", BCON_UTF8(ev->occurred_at), "published_at", BCON_UTF8(published_at),
	    "applied_at", BCON_UTF8(applied_at), "applied_by", BCON_UTF8(s->instance),
	    "stream_seq", BCON_INT64((int64_t)stream_seq), "superseded", BCON_BOOL(superseded));
	if (personal && ev->name != NULL && ev->email != NULL) {
		BSON_APPEND_UTF8(doc, "name", ev->name);
		BSON_APPEND_UTF8(doc, "email", ev->email);
	}
	return doc;
}

/* Removes the personal fields (name, email) from every history entry of user id: what applying
 * its deletion does, before the deletion's own entry is written, so that a deletion whose entry
 * exists has done it. Idempotent. */
static bool
history_erase_personal(mongoc_collection_t *hist, int64_t id, bson_error_t *e)
{
	bson_t *filter = BCON_NEW("user_id", BCON_INT64(id), "$or", "[",
	    "{", "name", "{", "$exists", BCON_BOOL(true), "}", "}",
	    "{", "email", "{", "$exists", BCON_BOOL(true), "}", "}", "]");
	bson_t *update = BCON_NEW("$unset", "{", "name", BCON_UTF8(""), "email", BCON_UTF8(""), "}");
	bool ok = mongoc_collection_update_many(hist, filter, update, NULL, NULL, e);

	bson_destroy(filter);
	bson_destroy(update);
	return ok;
}

/* history_erase_personal() through cl, with err filled on failure. */
static int
history_erase(struct store *s, mongoc_client_t *cl, int64_t id, char *err, size_t errlen)
{
	mongoc_collection_t *hist = mongoc_client_get_collection(cl, s->db, s->history);
	bson_error_t e;
	bool ok = history_erase_personal(hist, id, &e);

	mongoc_collection_destroy(hist);
	if (!ok) {
		char why[256];

		error_text(&e, why, sizeof(why));
		snprintf(err, errlen, "could not erase the personal data of deleted user %lld from %s: %s",
		    (long long)id, s->history, why);
		return -1;
	}
	return 0;
}

/* Inserts the history entry of ev; an entry that is already there is fine, except that an
 * applied event finding its entry there may have taken effect once more, which is counted on it
 * (history_count_reapplied()). */
static int
history_insert(struct store *s, mongoc_client_t *cl, const struct event *ev, int64_t published_us,
    uint64_t stream_seq, const char *applied_at, bool superseded, bool personal, char *err,
    size_t errlen)
{
	mongoc_collection_t *coll = mongoc_client_get_collection(cl, s->db, s->history);
	bson_t *doc = history_entry(s, ev, published_us, stream_seq, applied_at, superseded, personal);
	bson_error_t e;
	bool ok;

	ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, &e);
	bson_destroy(doc);
	if (!ok && e.code == DUPLICATE_KEY && !superseded)
		ok = history_count_reapplied(coll, ev, stream_seq, applied_at, s->instance, &e);
	mongoc_collection_destroy(coll);
	if (!ok && e.code != DUPLICATE_KEY) {
		char why[256];

		error_text(&e, why, sizeof(why));
		snprintf(err, errlen, "could not record event %s in %s: %s", ev->event_id, s->history, why);
		return -1;
	}
	return 0;
}

/* Copies field key of doc into out, when it is there. */
static void
copy_field(bson_t *out, const bson_t *doc, const char *key, const char *as)
{
	bson_iter_t it;

	if (bson_iter_init_find(&it, doc, key))
		bson_append_value(out, as, -1, bson_iter_value(&it));
}

/* The event id the document doc holds (the last event that took effect on it), or NULL for a
 * document written before documents carried it. Points into doc. */
static const char *
copy_event_id(const bson_t *doc)
{
	bson_iter_t it;

	if (!bson_iter_init_find(&it, doc, "event_id") || !BSON_ITER_HOLDS_UTF8(&it))
		return NULL;
	return bson_iter_utf8(&it, NULL);
}

/* True when doc is a tombstone: its user is deleted, and nothing written for it holds personal
 * data any more. */
static bool
copy_deleted(const bson_t *doc)
{
	bson_iter_t it;

	return bson_iter_init_find(&it, doc, "deleted") && BSON_ITER_HOLDS_BOOL(&it) &&
	    bson_iter_bool(&it);
}

static int64_t
copy_version(const bson_t *doc)
{
	bson_iter_t it;

	if (bson_iter_init_find(&it, doc, "version") && BSON_ITER_HOLDS_NUMBER(&it))
		return bson_iter_as_int64(&it);
	return 0;
}

/* Reads the document of user id into *doc: a copy the caller bson_destroy()s, or NULL when there
 * is none. Returns 0, or -1 with e filled. */
static int
copy_read(mongoc_collection_t *coll, int64_t id, bson_t **doc, bson_error_t *e)
{
	bson_t *filter = BCON_NEW("_id", BCON_INT64(id));
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);
	const bson_t *found;
	int rc = 0;

	*doc = NULL;
	if (mongoc_cursor_next(cur, &found))
		*doc = bson_copy(found);
	else if (mongoc_cursor_error(cur, e))
		rc = -1;
	mongoc_cursor_destroy(cur);
	bson_destroy(filter);
	return rc;
}

/* Inserts the applied history entry of the event the document doc holds, made from the document:
 * it holds every field of its event, and applied_by and applied_at of the write that put it
 * there, so the entry names the process whose write took effect, whichever process writes the
 * entry. An entry of that event already there is fine: it adds nothing. A tombstone's entry gets
 * no name or email, even from a tombstone written before deletions left them out. */
static bool
history_insert_from_copy(mongoc_collection_t *hist, const bson_t *doc, bson_error_t *e)
{
	static const char *const keys[] = { "user_id", "version", "updated_at", "deleted",
	    "committed_at", "published_at", "applied_at", "applied_by", "stream_seq" };
	bson_t *entry = bson_new();
	bool ok;

	copy_field(entry, doc, "event_id", "_id");
	copy_field(entry, doc, "event_id", "event_id");
	copy_field(entry, doc, "event_type", "type");
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		copy_field(entry, doc, keys[i], keys[i]);
	if (!copy_deleted(doc)) {
		copy_field(entry, doc, "name", "name");
		copy_field(entry, doc, "email", "email");
	}
	BSON_APPEND_BOOL(entry, "superseded", false);
	ok = mongoc_collection_insert_one(hist, entry, NULL, NULL, e) || e->code == DUPLICATE_KEY;
	bson_destroy(entry);
	return ok;
}

/* Makes sure the event the document of user id holds has its history entry: a crash between the
 * upsert and the history insert leaves it missing, and a later event of that user, delivered
 * before the redelivery of the crashed one, would overwrite the document that can restore it.
 * Runs before the first upsert of each user in the process's life, after a failed write, and
 * after this process took the lease back (store_forget_verified()); the document holds every
 * field of its event for this. */
static int
history_repair(struct store *s, mongoc_client_t *cl, int64_t id, char *err, size_t errlen)
{
	mongoc_collection_t *coll = mongoc_client_get_collection(cl, s->db, s->collection);
	mongoc_collection_t *hist = mongoc_client_get_collection(cl, s->db, s->history);
	mongoc_cursor_t *hcur = NULL;
	const bson_t *hdoc;
	bson_t *doc = NULL, *hfilter = NULL;
	const char *event_id, *what = "read";
	bson_error_t e;
	int rc = -1;

	if (copy_read(coll, id, &doc, &e) != 0)
		goto fail;
	if (doc == NULL || (event_id = copy_event_id(doc)) == NULL) {
		rc = 0;
		goto out;
	}
	hfilter = BCON_NEW("_id", BCON_UTF8(event_id));
	hcur = mongoc_collection_find_with_opts(hist, hfilter, NULL, NULL);
	if (mongoc_cursor_next(hcur, &hdoc)) {
		rc = 0;
		goto out;
	}
	if (mongoc_cursor_error(hcur, &e))
		goto fail;
	what = "repair the history of";
	if (!history_insert_from_copy(hist, doc, &e))
		goto fail;
	rc = 0;
	goto out;
fail:
	{
		char why[256];

		error_text(&e, why, sizeof(why));
		snprintf(err, errlen, "could not %s user %lld: %s", what, (long long)id, why);
	}
out:
	bson_destroy(hfilter);
	if (hcur != NULL)
		mongoc_cursor_destroy(hcur);
	bson_destroy(doc);
	mongoc_collection_destroy(hist);
	mongoc_collection_destroy(coll);
	return rc;
}

/* Records the stale event ev in the history. doc is the document that made it stale (NULL: read
 * here). When the document holds ev itself, ev did take effect: a write of it landed before this
 * one (another process's that stopped between its write and its history entry, killed or paused
 * past the lease, or an earlier attempt here whose history insert failed). Its entry is then the
 * applied one, from the document, naming that write; recording it as superseded would say that
 * the event never took effect. Otherwise ev had no effect: a superseded entry, once, without
 * name and email when the document is a tombstone (the user is deleted: a replay or a late
 * redelivery of its older events brings none of its personal data back). Either way an entry
 * that is there already (a plain redelivery) adds nothing. */
static int
history_record_stale(struct store *s, mongoc_client_t *cl, mongoc_collection_t *coll,
    const struct event *ev, const bson_t *doc, int64_t published_us, uint64_t stream_seq,
    const char *applied_at, char *err, size_t errlen)
{
	bson_t *read = NULL;
	const char *held;
	bson_error_t e;
	bool ok;

	if (doc == NULL) {
		if (copy_read(coll, ev->user_id, &read, &e) != 0) {
			char why[256];

			error_text(&e, why, sizeof(why));
			snprintf(err, errlen, "could not read user %lld in %s.%s: %s",
			    (long long)ev->user_id, s->db, s->collection, why);
			return -1;
		}
		doc = read;
	}
	held = doc != NULL ? copy_event_id(doc) : NULL;
	if (held == NULL || strcmp(held, ev->event_id) != 0) {
		bool personal = doc == NULL || !copy_deleted(doc);

		bson_destroy(read);
		return history_insert(s, cl, ev, published_us, stream_seq, applied_at, true, personal,
		    err, errlen);
	}
	{
		mongoc_collection_t *hist = mongoc_client_get_collection(cl, s->db, s->history);

		ok = history_insert_from_copy(hist, doc, &e);
		mongoc_collection_destroy(hist);
	}
	bson_destroy(read);
	if (!ok) {
		char why[256];

		error_text(&e, why, sizeof(why));
		snprintf(err, errlen, "could not record event %s in %s: %s", ev->event_id, s->history, why);
		return -1;
	}
	return 0;
}

/* The update that writes ev's full state into its user's document: a new document the caller
 * bson_destroy()s. The document names the event that took effect last and the write that applied
 * it (applied_by, applied_at): what a stale event that finds itself there, or the repair, writes
 * its history entry from. A deletion removes name and email: the tombstone keeps only what the
 * version guard and the reads need. */
static bson_t *
copy_update(const struct store *s, const struct event *ev, int64_t published_us,
    uint64_t stream_seq, const char *applied_at)
{
	char published_at[32];
	bson_t *update, set;

	rfc3339_us(published_us, published_at);
	update = bson_new();
	BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set);
	BSON_APPEND_INT64(&set, "user_id", ev->user_id);
	if (ev->name != NULL && ev->email != NULL) {
		BSON_APPEND_UTF8(&set, "name", ev->name);
		BSON_APPEND_UTF8(&set, "email", ev->email);
	}
	BSON_APPEND_UTF8(&set, "updated_at", ev->updated_at);
	BSON_APPEND_INT64(&set, "version", ev->version);
	BSON_APPEND_BOOL(&set, "deleted", ev->deleted);
	BSON_APPEND_UTF8(&set, "event_id", ev->event_id);
	BSON_APPEND_UTF8(&set, "event_type", ev->type);
	BSON_APPEND_UTF8(&set, "committed_at", ev->occurred_at);
	BSON_APPEND_UTF8(&set, "published_at", published_at);
	BSON_APPEND_UTF8(&set, "applied_at", applied_at);
	BSON_APPEND_UTF8(&set, "applied_by", s->instance);
	BSON_APPEND_INT64(&set, "stream_seq", (int64_t)stream_seq);
	bson_append_document_end(update, &set);
	if (ev->kind == EVENT_DELETED) {
		bson_t unset;

		BSON_APPEND_DOCUMENT_BEGIN(update, "$unset", &unset);
		BSON_APPEND_UTF8(&unset, "name", "");
		BSON_APPEND_UTF8(&unset, "email", "");
		bson_append_document_end(update, &unset);
	}
	return update;
}

/* The filter of an event's write: its user's document only at the version just before the
 * event's (exact), or at any older version. A new document the caller bson_destroy()s. */
static bson_t *
copy_filter(const struct event *ev, bool exact)
{
	if (exact)
		return BCON_NEW("_id", BCON_INT64(ev->user_id), "version", BCON_INT64(ev->version - 1));
	return BCON_NEW("_id", BCON_INT64(ev->user_id), "version", "{", "$lt",
	    BCON_INT64(ev->version), "}");
}

/* The write of store_apply(). With exact, the filter takes the document only at the version
 * just before the event's, without upsert; a write that matched nothing then reads the document
 * to tell stale from early (on FerretDB the filter and the write are not one atomic step, so a
 * document that is at the previous version by the time of the read was moved by another writer
 * meanwhile: written again, a few times at most). Otherwise the filter takes any older version
 * and the upsert inserts a missing document; a document at or past the event's version makes
 * that insert collide on _id (11000), the same answer on MongoDB and FerretDB. On
 * COPY_STORE_STALE *stale_doc is the document read (the caller bson_destroy()s it), or NULL when
 * none was read. */
static enum copy_store_result
write_event(struct store *s, mongoc_collection_t *coll, const struct event *ev, bool exact,
    const bson_t *update, int64_t *copy_version_out, bson_t **stale_doc, char *err, size_t errlen)
{
	bson_t *filter, *opts, *doc = NULL;
	bson_t reply = BSON_INITIALIZER;
	enum copy_store_result res = COPY_STORE_ERROR;
	char why[256];
	bson_error_t e;

	*stale_doc = NULL;
	filter = copy_filter(ev, exact);
	opts = BCON_NEW("upsert", BCON_BOOL(!exact));
	for (int attempt = 0; attempt < 3; attempt++) {
		int64_t version;

		bson_destroy(&reply);
		if (!mongoc_collection_update_one(coll, filter, update, opts, &reply, &e)) {
			if (e.code == DUPLICATE_KEY) {
				res = COPY_STORE_STALE;
			} else {
				error_text(&e, why, sizeof(why));
				snprintf(err, errlen, "could not apply event %s to %s.%s: %s", ev->event_id,
				    s->db, s->collection, why);
			}
			goto out;
		}
		if (!exact) {
			res = reply_int(&reply, "modifiedCount") + reply_int(&reply, "upsertedCount") > 0 ?
			    COPY_STORE_APPLIED : COPY_STORE_STALE;
			goto out;
		}
		if (reply_int(&reply, "matchedCount") > 0) {
			res = COPY_STORE_APPLIED;
			goto out;
		}
		bson_destroy(doc);
		if (copy_read(coll, ev->user_id, &doc, &e) != 0) {
			error_text(&e, why, sizeof(why));
			snprintf(err, errlen, "could not read the version of user %lld in %s.%s: %s",
			    (long long)ev->user_id, s->db, s->collection, why);
			goto out;
		}
		version = doc != NULL ? copy_version(doc) : 0;
		if (doc != NULL && version >= ev->version) {
			*stale_doc = doc;
			doc = NULL;
			res = COPY_STORE_STALE;
			goto out;
		}
		if (doc == NULL || version < ev->version - 1) {
			if (copy_version_out != NULL)
				*copy_version_out = version;
			res = COPY_STORE_EARLY;
			goto out;
		}
		/* At the previous version now: another writer moved it between the two steps. */
	}
	snprintf(err, errlen, "could not apply event %s to %s.%s: user %lld changed under every "
	    "write", ev->event_id, s->db, s->collection, (long long)ev->user_id);
out:
	bson_destroy(doc);
	bson_destroy(&reply);
	bson_destroy(filter);
	bson_destroy(opts);
	return res;
}

void
store_forget_verified(struct store *s)
{
	pthread_mutex_lock(&s->lock);
	free(s->verified.slots);
	s->verified = (struct idset){ NULL, 0, 0 };
	pthread_mutex_unlock(&s->lock);
}

enum copy_store_result
store_apply(struct store *s, const struct event *ev, enum copy_store_order order,
    int64_t published_us, uint64_t stream_seq, int64_t *copy_version_out, char *err, size_t errlen)
{
	mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
	mongoc_collection_t *coll = mongoc_client_get_collection(cl, s->db, s->collection);
	/* A version 1 event has no version before it, and a snapshot rebases the copy: both take
	 * the guard "any older version", as every event does over a gap. */
	bool exact = order == COPY_STORE_IN_ORDER && ev->kind != EVENT_SNAPSHOT && ev->version > 1;
	enum copy_store_result res = COPY_STORE_ERROR;
	char applied_at[32];
	bson_t *update = NULL, *stale_doc = NULL;

	/* A version 1 event never overwrites a stored document (its filter, version < 1, matches
	 * none: it inserts, or collides when the document exists), so it needs no repair first; it
	 * also leaves the user unverified, so the user's next event still checks. This spares a
	 * backlog of creations two reads per event. */
	if (ev->version > 1 && !verified_has(s, ev->user_id)) {
		if (history_repair(s, cl, ev->user_id, err, errlen) != 0)
			goto out;
		verified_set(s, ev->user_id, true);
	}
	rfc3339_us(wall_us(), applied_at);
	update = copy_update(s, ev, published_us, stream_seq, applied_at);
	res = write_event(s, coll, ev, exact, update, copy_version_out, &stale_doc, err, errlen);
	if (res == COPY_STORE_APPLIED && FAILPOINT("consumer.between_upsert_and_history") != 0) {
		snprintf(err, errlen, "failpoint consumer.between_upsert_and_history");
		res = COPY_STORE_ERROR;
	} else if (ev->kind == EVENT_DELETED && (res == COPY_STORE_APPLIED ||
	    res == COPY_STORE_STALE) && history_erase(s, cl, ev->user_id, err, errlen) != 0) {
		/* A deletion erases the user's personal data from the history before its own entry
		 * is written, whether its write landed now or before (a stale deletion: the erasure
		 * of that earlier attempt may not have happened). Retried as a whole. */
		res = COPY_STORE_ERROR;
	} else if (res == COPY_STORE_APPLIED && history_insert(s, cl, ev, published_us, stream_seq,
	    applied_at, false, true, err, errlen) != 0) {
		/* Retried as a whole: the write is then stale and finds the event in the document. */
		res = COPY_STORE_ERROR;
	} else if (res == COPY_STORE_STALE && history_record_stale(s, cl, coll, ev, stale_doc,
	    published_us, stream_seq, applied_at, err, errlen) != 0) {
		/* A stale event the history does not know yet is recorded once: as applied when the
		 * document holds it (a write of it landed, its entry did not), else as superseded (a
		 * snapshot of a version already applied; an event older than one applied over a gap),
		 * so the history lists every version; a duplicate finds its entry there and adds
		 * nothing. */
		res = COPY_STORE_ERROR;
	}
out:
	/* The write may have landed without its history entry: check again next time. */
	if (res == COPY_STORE_ERROR)
		verified_set(s, ev->user_id, false);
	bson_destroy(stale_doc);
	bson_destroy(update);
	mongoc_collection_destroy(coll);
	mongoc_client_pool_push(s->pool, cl);
	return res;
}

/* Reads the write errors of a bulk's reply into codes (one per operation, n of them; 0 where
 * none). Returns how many there were: none with a failed bulk means it failed as a whole (the
 * server, the connection). */
static size_t
bulk_errors(const bson_t *reply, int32_t *codes, size_t n)
{
	bson_iter_t it, arr, one;
	size_t found = 0;

	for (size_t i = 0; i < n; i++)
		codes[i] = 0;
	if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it) ||
	    !bson_iter_recurse(&it, &arr))
		return 0;
	while (bson_iter_next(&arr)) {
		int64_t index = -1;
		int32_t code = -1;

		if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &one))
			continue;
		while (bson_iter_next(&one)) {
			if (strcmp(bson_iter_key(&one), "index") == 0 && BSON_ITER_HOLDS_NUMBER(&one))
				index = bson_iter_as_int64(&one);
			else if (strcmp(bson_iter_key(&one), "code") == 0 && BSON_ITER_HOLDS_NUMBER(&one))
				code = (int32_t)bson_iter_as_int64(&one);
		}
		if (index >= 0 && (size_t)index < n) {
			codes[index] = code != 0 ? code : -1;
			found++;
		}
	}
	return found;
}

/* True when the document of ev's user holds ev from this process's write at applied_at: one write
 * of a bulk whose count did not add up (another event in it matched nothing) took effect. False
 * also when it could not tell: store_apply() then settles the event. */
static bool
batch_took_effect(const struct store *s, mongoc_collection_t *coll, const struct event *ev,
    const char *applied_at)
{
	bson_t *doc = NULL;
	bson_error_t e;
	bson_iter_t it;
	bool took;

	if (copy_read(coll, ev->user_id, &doc, &e) != 0 || doc == NULL)
		return false;
	took = copy_event_id(doc) != NULL && strcmp(copy_event_id(doc), ev->event_id) == 0 &&
	    bson_iter_init_find(&it, doc, "applied_at") && BSON_ITER_HOLDS_UTF8(&it) &&
	    strcmp(bson_iter_utf8(&it, NULL), applied_at) == 0 &&
	    bson_iter_init_find(&it, doc, "applied_by") && BSON_ITER_HOLDS_UTF8(&it) &&
	    strcmp(bson_iter_utf8(&it, NULL), s->instance) == 0;
	bson_destroy(doc);
	return took;
}

/* The documents' step of store_apply_batch(): one ordered bulk of the writes of the events in
 * ops (indexes into items), which the caller checked and repaired. An ordered bulk stops at its
 * first write error; its reply counts matched and upserted writes but does not say which. Where
 * the count adds up, every write before the failed one (or every write) took effect; where it
 * does not (a write matched nothing: an early event, a stale update), each document is read back
 * to tell. Anything else is left to store_apply(), which finds a write that did land stale and
 * its event in the document. */
static void
batch_write_copies(struct store *s, mongoc_collection_t *coll, struct copy_batch_item *items,
    const size_t *ops, size_t nops, const char *applied_at, char *err, size_t errlen)
{
	bson_t *bopts = BCON_NEW("ordered", BCON_BOOL(true));
	mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(coll, bopts);
	int32_t *codes = calloc(nops, sizeof(*codes));
	bson_t reply;
	bson_error_t e;
	size_t ran = 0, failed = SIZE_MAX;
	int64_t took;

	for (size_t k = 0; k < nops; k++)
		items[ops[k]].outcome = COPY_BATCH_ALONE;
	if (codes == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (size_t k = 0; k < nops; k++) {
		const struct event *ev = items[ops[k]].ev;
		bool exact = ev->kind != EVENT_SNAPSHOT && ev->version > 1;
		bson_t *filter = copy_filter(ev, exact);
		bson_t *update = copy_update(s, ev, items[ops[k]].published_us, items[ops[k]].stream_seq,
		    applied_at);
		bson_t *opts = BCON_NEW("upsert", BCON_BOOL(!exact));
		bool added = mongoc_bulk_operation_update_one_with_opts(bulk, filter, update, opts, &e);

		bson_destroy(filter);
		bson_destroy(update);
		bson_destroy(opts);
		if (!added) {
			/* Not sent at all: the whole bulk is left to store_apply(). */
			snprintf(err, errlen, "could not write event %s in a bulk: %s", ev->event_id,
			    e.message);
			goto out;
		}
	}
	if (mongoc_bulk_operation_execute(bulk, &reply, &e) != 0) {
		ran = nops;
	} else if (bulk_errors(&reply, codes, nops) > 0) {
		while (codes[ran] == 0)
			ran++;
		failed = ran;
		/* A version 1 or a snapshot whose user is at or past it collides on _id: stale. */
		if (codes[failed] != DUPLICATE_KEY)
			snprintf(err, errlen, "could not write event %s in a bulk: %s",
			    items[ops[failed]].ev->event_id, e.message);
	} else {
		/* Failed as a whole (the server, the connection): nothing is known. */
		error_text(&e, err, errlen);
		bson_destroy(&reply);
		goto out;
	}
	took = reply_int(&reply, "nMatched") + reply_int(&reply, "nUpserted");
	for (size_t k = 0; k < nops; k++) {
		if (k < ran && took == (int64_t)ran)
			items[ops[k]].outcome = COPY_BATCH_APPLIED;
		else if (k < ran)
			items[ops[k]].outcome = batch_took_effect(s, coll, items[ops[k]].ev, applied_at) ?
			    COPY_BATCH_APPLIED : COPY_BATCH_ALONE;
		else if (k == failed)
			items[ops[k]].outcome = COPY_BATCH_ALONE;
		else
			items[ops[k]].outcome = COPY_BATCH_NOT_RUN;
	}
	bson_destroy(&reply);
out:
	free(codes);
	mongoc_bulk_operation_destroy(bulk);
	bson_destroy(bopts);
}

/* The history's step of store_apply_batch(): one unordered bulk insert of the entries of the
 * events the documents' step applied, after each applied deletion erased its user's personal
 * data from the history (one update each; one that fails leaves its deletion to store_apply()).
 * An entry that is there already means the event took effect once more
 * (history_count_reapplied()); an event whose entry could not be written is left to
 * store_apply(), which finds it stale in the document and writes the entry from there. */
static void
batch_write_history(struct store *s, mongoc_collection_t *hist, struct copy_batch_item *items,
    const size_t *ops, size_t nops, const char *applied_at, char *err, size_t errlen)
{
	bson_t *bopts = BCON_NEW("ordered", BCON_BOOL(false));
	mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(hist, bopts);
	size_t *entries = calloc(nops, sizeof(*entries)), n = 0;
	int32_t *codes = calloc(nops, sizeof(*codes));
	bson_t reply;
	bson_error_t e;

	for (size_t k = 0; k < nops; k++) {
		struct copy_batch_item *it = &items[ops[k]];
		bson_t *doc;
		bool added;

		if (it->outcome != COPY_BATCH_APPLIED)
			continue;
		if (entries == NULL || codes == NULL) {
			it->outcome = COPY_BATCH_ALONE;
			continue;
		}
		if (it->ev->kind == EVENT_DELETED && !history_erase_personal(hist, it->ev->user_id, &e)) {
			snprintf(err, errlen, "could not erase the personal data of deleted user %lld from "
			    "%s: %s", (long long)it->ev->user_id, s->history, e.message);
			it->outcome = COPY_BATCH_ALONE;
			continue;
		}
		doc = history_entry(s, it->ev, it->published_us, it->stream_seq, applied_at, false, true);
		added = mongoc_bulk_operation_insert_with_opts(bulk, doc, NULL, &e);
		bson_destroy(doc);
		if (added)
			entries[n++] = ops[k];
		else
			it->outcome = COPY_BATCH_ALONE;
	}
	if (n == 0)
		goto out;
	if (mongoc_bulk_operation_execute(bulk, &reply, &e) != 0) {
		bson_destroy(&reply);
		goto out;
	}
	if (bulk_errors(&reply, codes, n) == 0) {
		error_text(&e, err, errlen);
		for (size_t k = 0; k < n; k++)
			items[entries[k]].outcome = COPY_BATCH_ALONE;
	}
	for (size_t k = 0; k < n; k++) {
		struct copy_batch_item *it = &items[entries[k]];
		bson_error_t e2;

		if (codes[k] == 0)
			continue;
		if (codes[k] != DUPLICATE_KEY || !history_count_reapplied(hist, it->ev, it->stream_seq,
		    applied_at, s->instance, &e2)) {
			snprintf(err, errlen, "could not record event %s in %s", it->ev->event_id,
			    s->history);
			it->outcome = COPY_BATCH_ALONE;
		}
	}
	bson_destroy(&reply);
out:
	free(entries);
	free(codes);
	mongoc_bulk_operation_destroy(bulk);
	bson_destroy(bopts);
}

size_t
store_apply_batch(struct store *s, struct copy_batch_item *items, size_t n, char *err,
    size_t errlen)
{
	mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
	mongoc_collection_t *coll = mongoc_client_get_collection(cl, s->db, s->collection);
	mongoc_collection_t *hist = mongoc_client_get_collection(cl, s->db, s->history);
	size_t *ops = calloc(n > 0 ? n : 1, sizeof(*ops)), nops = 0, applied = 0;
	char applied_at[32];

	err[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		const struct event *ev = items[i].ev;

		items[i].outcome = COPY_BATCH_ALONE;
		if (ops == NULL)
			continue;
		/* As in store_apply(): the document's own event gets its history entry before the
		 * document is overwritten. */
		if (ev->version > 1 && !verified_has(s, ev->user_id)) {
			if (history_repair(s, cl, ev->user_id, err, errlen) != 0)
				continue;
			verified_set(s, ev->user_id, true);
		}
		ops[nops++] = i;
	}
	rfc3339_us(wall_us(), applied_at);
	if (nops > 0)
		batch_write_copies(s, coll, items, ops, nops, applied_at, err, errlen);
	for (size_t k = 0; k < nops; k++)
		if (items[ops[k]].outcome == COPY_BATCH_APPLIED &&
		    FAILPOINT("consumer.between_upsert_and_history") != 0) {
			snprintf(err, errlen, "failpoint consumer.between_upsert_and_history");
			items[ops[k]].outcome = COPY_BATCH_ALONE;
		}
	if (nops > 0)
		batch_write_history(s, hist, items, ops, nops, applied_at, err, errlen);
	for (size_t i = 0; i < n; i++) {
		/* Applied with its entry, the document holds an event the history knows; anything
		 * else may have landed without its entry: checked again first. */
		if (items[i].outcome == COPY_BATCH_APPLIED) {
			verified_set(s, items[i].ev->user_id, true);
			applied++;
		} else if (items[i].outcome == COPY_BATCH_ALONE) {
			verified_set(s, items[i].ev->user_id, false);
		}
	}
	free(ops);
	mongoc_collection_destroy(hist);
	mongoc_collection_destroy(coll);
	mongoc_client_pool_push(s->pool, cl);
	return applied;
}

/* True when cur ended on an error, with err saying that collection could not be read. */
static bool
cursor_failed(mongoc_cursor_t *cur, const struct store *s, const char *collection, char *err,
    size_t errlen)
{
	bson_error_t e;
	char why[256];

	if (!mongoc_cursor_error(cur, &e))
		return false;
	error_text(&e, why, sizeof(why));
	snprintf(err, errlen, "could not read %s.%s: %s", s->db, collection, why);
	return true;
}

static json_t *
bson_field_json(const bson_t *doc, const char *key)
{
	bson_iter_t it;

	if (!bson_iter_init_find(&it, doc, key))
		return json_null();
	switch (bson_iter_type(&it)) {
	case BSON_TYPE_UTF8:
		return json_string(bson_iter_utf8(&it, NULL));
	case BSON_TYPE_INT32:
	case BSON_TYPE_INT64:
	case BSON_TYPE_DOUBLE:
		return json_integer(bson_iter_as_int64(&it));
	case BSON_TYPE_BOOL:
		return json_boolean(bson_iter_bool(&it));
	default:
		return json_null();
	}
}

static json_t *
user_json(const bson_t *doc)
{
	json_t *o = json_object();
	json_t *deleted = bson_field_json(doc, "deleted");

	json_object_set_new(o, "user_id", bson_field_json(doc, "user_id"));
	json_object_set_new(o, "name", bson_field_json(doc, "name"));
	json_object_set_new(o, "email", bson_field_json(doc, "email"));
	json_object_set_new(o, "updated_at", bson_field_json(doc, "updated_at"));
	json_object_set_new(o, "version", bson_field_json(doc, "version"));
	json_object_set_new(o, "deleted", json_boolean(json_is_true(deleted)));
	json_decref(deleted);
	return o;
}

static json_t *
history_json(const bson_t *doc)
{
	static const char *const keys[] = { "event_id", "type", "user_id", "version", "name", "email",
	    "updated_at", "deleted", "committed_at", "published_at", "applied_at", "applied_by",
	    "stream_seq", "superseded" };
	json_t *o = json_object();

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		json_object_set_new(o, keys[i], bson_field_json(doc, keys[i]));
	return o;
}

/* Runs find on collection and appends each document, converted by conv, to a new array. */
static int
find_json(struct store *s, const char *collection, const bson_t *filter, const bson_t *opts,
    json_t *(*conv)(const bson_t *), json_t **out, char *err, size_t errlen)
{
	mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
	mongoc_collection_t *coll = mongoc_client_get_collection(cl, s->db, collection);
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
	json_t *arr = json_array();
	const bson_t *doc;
	int rc = 0;

	while (mongoc_cursor_next(cur, &doc))
		json_array_append_new(arr, conv(doc));
	if (cursor_failed(cur, s, collection, err, errlen)) {
		json_decref(arr);
		arr = NULL;
		rc = -1;
	}
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(coll);
	mongoc_client_pool_push(s->pool, cl);
	*out = arr;
	return rc;
}

int
store_get_user(struct store *s, int64_t id, json_t **out, char *err, size_t errlen)
{
	bson_t *filter = BCON_NEW("_id", BCON_INT64(id));
	json_t *arr = NULL;
	int rc;

	*out = NULL;
	rc = find_json(s, s->collection, filter, NULL, user_json, &arr, err, errlen);
	bson_destroy(filter);
	if (rc != 0)
		return -1;
	if (json_array_size(arr) > 0)
		*out = json_incref(json_array_get(arr, 0));
	json_decref(arr);
	return 0;
}

int
store_list_users(struct store *s, int64_t after, long limit, json_t **out, char *err, size_t errlen)
{
	bson_t *filter = BCON_NEW("_id", "{", "$gt", BCON_INT64(after), "}",
	    "deleted", "{", "$ne", BCON_BOOL(true), "}");
	bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}", "limit", BCON_INT64(limit));
	int rc;

	rc = find_json(s, s->collection, filter, opts, user_json, out, err, errlen);
	bson_destroy(filter);
	bson_destroy(opts);
	return rc;
}

int
store_list_events(struct store *s, int64_t id, bool superseded, json_t **out, char *err,
    size_t errlen)
{
	/* Entries written before superseded existed lack the field: $ne keeps them. */
	bson_t *filter = superseded ? BCON_NEW("user_id", BCON_INT64(id)) :
	    BCON_NEW("user_id", BCON_INT64(id), "superseded", "{", "$ne", BCON_BOOL(true), "}");
	bson_t *opts = BCON_NEW("sort", "{", "version", BCON_INT32(1), "stream_seq", BCON_INT32(1),
	    "}");
	int rc;

	rc = find_json(s, s->history, filter, opts, history_json, out, err, errlen);
	bson_destroy(filter);
	bson_destroy(opts);
	return rc;
}

int
store_versions(struct store *s, const int64_t *ids, size_t n, int64_t *versions, char *err,
    size_t errlen)
{
	mongoc_client_t *cl;
	mongoc_collection_t *coll;
	mongoc_cursor_t *cur;
	bson_t *filter = bson_new(), *opts, in, list;
	const bson_t *doc;
	bson_iter_t it;
	char key[24];
	int rc = 0;

	for (size_t i = 0; i < n; i++)
		versions[i] = 0;
	BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &in);
	BSON_APPEND_ARRAY_BEGIN(&in, "$in", &list);
	for (size_t i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "%zu", i);
		BSON_APPEND_INT64(&list, key, ids[i]);
	}
	bson_append_array_end(&in, &list);
	bson_append_document_end(filter, &in);
	opts = BCON_NEW("projection", "{", "version", BCON_INT32(1), "}");
	cl = mongoc_client_pool_pop(s->pool);
	coll = mongoc_client_get_collection(cl, s->db, s->collection);
	cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
	while (mongoc_cursor_next(cur, &doc)) {
		int64_t id, version = 0;

		if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_NUMBER(&it))
			continue;
		id = bson_iter_as_int64(&it);
		if (bson_iter_init_find(&it, doc, "version") && BSON_ITER_HOLDS_NUMBER(&it))
			version = bson_iter_as_int64(&it);
		for (size_t i = 0; i < n; i++)
			if (ids[i] == id)
				versions[i] = version;
	}
	if (cursor_failed(cur, s, s->collection, err, errlen))
		rc = -1;
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(coll);
	mongoc_client_pool_push(s->pool, cl);
	bson_destroy(filter);
	bson_destroy(opts);
	return rc;
}

int
store_drop(struct store *s, const char *collection, char *err, size_t errlen)
{
	bson_t *cmd = BCON_NEW("drop", BCON_UTF8(collection));
	bson_t reply;
	bson_error_t e;
	int rc;

	rc = db_command(s, s->db, cmd, &reply, &e);
	bson_destroy(cmd);
	bson_destroy(&reply);
	if (rc != 0 && e.code != NAMESPACE_NOT_FOUND && strstr(e.message, "ns not found") == NULL) {
		char why[256];

		error_text(&e, why, sizeof(why));
		snprintf(err, errlen, "could not drop %s.%s: %s", s->db, collection, why);
		return -1;
	}
	return 0;
}

/* The filter of the merge's writes: user id's document in the live collection, unless the live
 * consumer wrote it from an event past until (newer than anything the fresh collection has). */
static bson_t *
merge_filter(int64_t id, uint64_t until)
{
	return BCON_NEW("_id", BCON_INT64(id), "$or", "[",
	    "{", "stream_seq", "{", "$lte", BCON_INT64((int64_t)until), "}", "}",
	    "{", "stream_seq", "{", "$exists", BCON_BOOL(false), "}", "}", "]");
}

/* Runs a bulk of up to MERGE_BULK writes of the merge; a duplicate key is a document the live
 * consumer wrote from a newer event meanwhile (the filter missed it, the upsert collided): kept. */
static int
merge_flush(mongoc_bulk_operation_t **bulk, mongoc_collection_t *coll, size_t *n, char *err,
    size_t errlen)
{
	bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
	int32_t *codes = NULL;
	bson_t reply;
	bson_error_t e;
	int rc = 0;

	if (*n == 0)
		goto out;
	if (mongoc_bulk_operation_execute(*bulk, &reply, &e) == 0) {
		size_t errors;

		codes = calloc(*n, sizeof(*codes));
		errors = codes != NULL ? bulk_errors(&reply, codes, *n) : 0;
		for (size_t k = 0; k < *n && errors > 0; k++)
			if (codes[k] != 0 && codes[k] != DUPLICATE_KEY)
				errors = 0;
		if (errors == 0) {
			char why[256];

			error_text(&e, why, sizeof(why));
			snprintf(err, errlen, "could not merge into %s: %s",
			    mongoc_collection_get_name(coll), why);
			rc = -1;
		}
	}
	bson_destroy(&reply);
out:
	free(codes);
	mongoc_bulk_operation_destroy(*bulk);
	*bulk = mongoc_collection_create_bulk_operation_with_opts(coll, opts);
	*n = 0;
	bson_destroy(opts);
	return rc;
}

/* Writes per bulk of the merge; FerretDB 1.24 holds a PostgreSQL connection for each write of an
 * update command that matches a document, until the command ends. */
#define MERGE_BULK 64

static int
cmp_int64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

int
store_merge(struct store *s, const char *from, const char *to, uint64_t until, bool prune,
    char *err, size_t errlen)
{
	mongoc_client_t *cl = mongoc_client_pool_pop(s->pool);
	mongoc_collection_t *src = mongoc_client_get_collection(cl, s->db, from);
	mongoc_collection_t *dst = mongoc_client_get_collection(cl, s->db, to);
	bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
	mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(dst, opts);
	bson_t *all = bson_new(), *sorted = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
	mongoc_cursor_t *cur;
	const bson_t *doc;
	int64_t *ids = NULL;
	size_t nids = 0, capids = 0, n = 0;
	bson_iter_t it;
	bool ok;
	int rc = -1;

	/* Every user of the fresh copy replaces its document: one write each, so a reader sees the
	 * old or the new document of a user, never none. */
	cur = mongoc_collection_find_with_opts(src, all, sorted, NULL);
	while (mongoc_cursor_next(cur, &doc)) {
		bson_t *filter, *upsert;
		int64_t id;

		if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_NUMBER(&it))
			continue;
		id = bson_iter_as_int64(&it);
		if (nids == capids) {
			size_t cap = capids ? capids * 2 : 4096;
			int64_t *bigger = realloc(ids, cap * sizeof(*bigger));

			if (bigger == NULL) {
				snprintf(err, errlen, "out of memory");
				mongoc_cursor_destroy(cur);
				goto out;
			}
			ids = bigger;
			capids = cap;
		}
		ids[nids++] = id;
		filter = merge_filter(id, until);
		upsert = BCON_NEW("upsert", BCON_BOOL(true));
		mongoc_bulk_operation_replace_one_with_opts(bulk, filter, doc, upsert, NULL);
		bson_destroy(filter);
		bson_destroy(upsert);
		if (++n == MERGE_BULK && merge_flush(&bulk, dst, &n, err, errlen) != 0) {
			mongoc_cursor_destroy(cur);
			goto out;
		}
	}
	ok = !cursor_failed(cur, s, from, err, errlen);
	mongoc_cursor_destroy(cur);
	if (!ok)
		goto out;
	if (merge_flush(&bulk, dst, &n, err, errlen) != 0)
		goto out;
	if (!prune) {
		rc = 0;
		goto out;
	}

	/* Then the users the fresh copy does not have (no event of theirs up to until): gone, unless
	 * the live consumer wrote them from a newer event. */
	qsort(ids, nids, sizeof(*ids), cmp_int64);
	{
		bson_t *proj = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}");

		cur = mongoc_collection_find_with_opts(dst, all, proj, NULL);
		bson_destroy(proj);
	}
	while (mongoc_cursor_next(cur, &doc)) {
		bson_t *filter;
		int64_t id;

		if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_NUMBER(&it))
			continue;
		id = bson_iter_as_int64(&it);
		if (nids > 0 && bsearch(&id, ids, nids, sizeof(*ids), cmp_int64) != NULL)
			continue;
		filter = merge_filter(id, until);
		mongoc_bulk_operation_remove_one_with_opts(bulk, filter, NULL, NULL);
		bson_destroy(filter);
		if (++n == MERGE_BULK && merge_flush(&bulk, dst, &n, err, errlen) != 0) {
			mongoc_cursor_destroy(cur);
			goto out;
		}
	}
	ok = !cursor_failed(cur, s, to, err, errlen);
	mongoc_cursor_destroy(cur);
	if (!ok)
		goto out;
	if (merge_flush(&bulk, dst, &n, err, errlen) != 0)
		goto out;
	rc = 0;
out:
	free(ids);
	mongoc_bulk_operation_destroy(bulk);
	bson_destroy(opts);
	bson_destroy(all);
	bson_destroy(sorted);
	mongoc_collection_destroy(src);
	mongoc_collection_destroy(dst);
	mongoc_client_pool_push(s->pool, cl);
	if (rc == 0)
		rc = store_drop(s, from, err, errlen);
	return rc;
}
