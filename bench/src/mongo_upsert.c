/* Baseline of the consumer's MongoDB side: the writes it makes for the benchmark's synthetic
 * events, in a plain mongo-c-driver loop without JetStream, decoding, checks or retries. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mongoc/mongoc.h>

#include "bench_util.h"

/*
 * Usage: mongo_upsert <uri> <count> [mode] [users] [lanes] [batch] [bulk]
 *
 * Event g (1, 2, ... count) is version (g - 1) / users + 1 of user (g - 1) % users + 1, with the
 * event id and stream sequence g, as the benchmark's outbox fill makes them; users defaults to
 * count (one version 1 event per user).
 *
 * mode is two bits. Bit 0 adds the history entries (collection user_notification_events, with
 * the consumer's two indexes) to the documents (user_notifications). Bit 1 batches as the
 * consumer does (notification-consumer/applier.c, store.c): each lane takes its users' events in
 * stream order in batches of up to <batch> (default 64, CONSUMER_BATCH) and writes a batch in
 * rounds of the first unwritten event of each user; a round is one ordered bulk of update_one,
 * with the filter {_id, version: version - 1} without upsert, or {_id, version: {$lt: 1}} with
 * upsert for a version 1, then one unordered bulk insert of the round's history entries. Without
 * it every event is one update_one with {_id, version: {$lt: version}} and upsert, then one
 * insert_one: the consumer before it batched, which bench/ferretdb_store.py's table of
 * FerretDB's stores measured. So 0 is documents only, one event at a time; 1 adds the history; 2
 * is documents only, batched; 3 (the default) is what the batching consumer writes.
 *
 * lanes (default 1) splits the users over as many threads, each with its own client, by the
 * consumer's hash of the user id. Unlike the consumer's lanes they do not share a fetch, acks,
 * the lease or a pool of clients, and never read: the loop is the writes alone.
 *
 * bulk (default: batch, no limit) splits a round's documents into bulks of at most that many.
 * FerretDB 1.24 keeps a PostgreSQL connection for every update of one update command that matched
 * a document until the command ends (internal/handler/msg_update.go), from its pool
 * (pool_max_conns, 50 unless its URL says otherwise): the bulks in flight, all lanes together,
 * must hold fewer than that or FerretDB waits forever (a bulk of 64 updates on the default pool
 * never returned). A socket timeout of 60 s (unless the uri sets one) turns such a wait into an
 * error.
 *
 * Prints one JSON line: the rate, the latency of a unit of work (an event, or a lane's batch),
 * and the cost per event in the first and the last tenth of the events, by the wall time in
 * which each tenth completed (coarse when a tenth holds few batches). It fails unless every
 * event matched or inserted its document and inserted its history entry.
 */

#define TS		"2026-11-29T10:00:00.123456Z"
#define APPLIED_BY	"mongo_upsert"

struct run {
	const char *uri;
	long n, users, lanes, batch, bulk_max;	/* bulk_max: updates in one bulk at most */
	bool history, batched;
	double t0;
	double *done;		/* per event: when its write returned, seconds after t0 */
	pthread_barrier_t start;
};

struct lane {
	struct run *run;
	long id;
	mongoc_client_t *cl;
	double *lat;		/* per unit of work, in seconds */
	long *round;		/* a round's events: indexes into the batch */
	int *nth;		/* per event of a batch: its user's events before it */
	long units;
	long applied, inserted;	/* documents matched or upserted, history entries inserted */
	int failed;
	char err[640];		/* room for a bson_error_t message and what failed */
};

struct event {
	int64_t user, version, g;
	char name[64], email[96], eid[64];
	const char *type;
};

static void
event_make(struct event *ev, const struct run *r, long i)
{
	ev->user = i % r->users + 1;
	ev->version = i / r->users + 1;
	ev->g = i + 1;
	ev->type = ev->version == 1 ? "user_created" : "user_updated";
	snprintf(ev->name, sizeof(ev->name), "Bench User %lld", (long long)ev->user);
	snprintf(ev->email, sizeof(ev->email), "bench-%lld@example.com", (long long)ev->user);
	snprintf(ev->eid, sizeof(ev->eid), "00000000-0000-4000-8000-%012lld", (long long)ev->g);
}

/* The document's new state, as the consumer's $set writes it. The caller bson_destroy()s it. */
static bson_t *
event_update(const struct event *ev)
{
	return BCON_NEW("$set", "{", "user_id", BCON_INT64(ev->user), "name", BCON_UTF8(ev->name),
	    "email", BCON_UTF8(ev->email), "updated_at", BCON_UTF8(TS),
	    "version", BCON_INT64(ev->version), "deleted", BCON_BOOL(false),
	    "event_id", BCON_UTF8(ev->eid), "event_type", BCON_UTF8(ev->type),
	    "committed_at", BCON_UTF8(TS), "published_at", BCON_UTF8(TS),
	    "applied_at", BCON_UTF8(TS), "applied_by", BCON_UTF8(APPLIED_BY),
	    "stream_seq", BCON_INT64(ev->g), "}");
}

/* The history entry of an applied event. The caller bson_destroy()s it. */
static bson_t *
event_entry(const struct event *ev)
{
	return BCON_NEW("_id", BCON_UTF8(ev->eid), "event_id", BCON_UTF8(ev->eid),
	    "user_id", BCON_INT64(ev->user), "version", BCON_INT64(ev->version),
	    "type", BCON_UTF8(ev->type), "name", BCON_UTF8(ev->name), "email", BCON_UTF8(ev->email),
	    "updated_at", BCON_UTF8(TS), "deleted", BCON_BOOL(false),
	    "committed_at", BCON_UTF8(TS), "published_at", BCON_UTF8(TS),
	    "applied_at", BCON_UTF8(TS), "applied_by", BCON_UTF8(APPLIED_BY),
	    "stream_seq", BCON_INT64(ev->g), "superseded", BCON_BOOL(false));
}

static int64_t
reply_count(const bson_t *reply, const char *key)
{
	bson_iter_t it;

	return bson_iter_init_find(&it, reply, key) ? bson_iter_as_int64(&it) : 0;
}

/* One event at a time: the update with upsert, then the history entry. */
static int
write_one(struct lane *l, mongoc_collection_t *coll, mongoc_collection_t *hist,
    const struct event *ev)
{
	bson_t *filter, *update, *opts, *entry;
	bson_t reply;
	bson_error_t e;
	bool ok;

	filter = BCON_NEW("_id", BCON_INT64(ev->user), "version", "{", "$lt",
	    BCON_INT64(ev->version), "}");
	update = event_update(ev);
	opts = BCON_NEW("upsert", BCON_BOOL(true));
	ok = mongoc_collection_update_one(coll, filter, update, opts, &reply, &e);
	if (ok)
		l->applied += reply_count(&reply, "modifiedCount") +
		    reply_count(&reply, "upsertedCount");
	bson_destroy(&reply);
	bson_destroy(filter);
	bson_destroy(update);
	bson_destroy(opts);
	if (!ok) {
		snprintf(l->err, sizeof(l->err), "could not upsert user %lld: %s",
		    (long long)ev->user, e.message);
		return -1;
	}
	if (!l->run->history)
		return 0;
	entry = event_entry(ev);
	ok = mongoc_collection_insert_one(hist, entry, NULL, NULL, &e);
	bson_destroy(entry);
	if (!ok) {
		snprintf(l->err, sizeof(l->err), "could not insert the history of event %s: %s",
		    ev->eid, e.message);
		return -1;
	}
	l->inserted++;
	return 0;
}

/* Executes and frees a bulk; adds the reply's counts of key and key2 (NULL: none) to *count. */
static int
bulk_run(struct lane *l, mongoc_bulk_operation_t *bulk, const char *key, const char *key2,
    long *count, const char *what)
{
	bson_t reply;
	bson_error_t e;
	bool ok;

	ok = mongoc_bulk_operation_execute(bulk, &reply, &e) != 0;
	if (ok)
		*count += reply_count(&reply, key) + (key2 != NULL ? reply_count(&reply, key2) : 0);
	bson_destroy(&reply);
	mongoc_bulk_operation_destroy(bulk);
	if (!ok)
		snprintf(l->err, sizeof(l->err), "could not %s: %s", what, e.message);
	return ok ? 0 : -1;
}

/* One ordered bulk of update_one, at most bulk_max of them; executes and frees it. */
static int
docs_bulk(struct lane *l, mongoc_collection_t *coll, const struct event *evs, const long *idx,
    long k)
{
	bson_t *opts = BCON_NEW("ordered", BCON_BOOL(true));
	mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(coll, opts);

	bson_destroy(opts);
	for (long j = 0; j < k; j++) {
		const struct event *ev = &evs[idx[j]];
		bson_t *filter, *update, *uopts;
		bson_error_t e;
		bool ok;

		if (ev->version == 1)
			filter = BCON_NEW("_id", BCON_INT64(ev->user), "version", "{", "$lt",
			    BCON_INT64(1), "}");
		else
			filter = BCON_NEW("_id", BCON_INT64(ev->user), "version",
			    BCON_INT64(ev->version - 1));
		update = event_update(ev);
		uopts = BCON_NEW("upsert", BCON_BOOL(ev->version == 1));
		ok = mongoc_bulk_operation_update_one_with_opts(bulk, filter, update, uopts, &e);
		bson_destroy(filter);
		bson_destroy(update);
		bson_destroy(uopts);
		if (!ok) {
			mongoc_bulk_operation_destroy(bulk);
			snprintf(l->err, sizeof(l->err), "could not add an update: %s", e.message);
			return -1;
		}
	}
	/* A version 1 counts as upserted, a later one as matched. */
	return bulk_run(l, bulk, "nMatched", "nUpserted", &l->applied, "write the documents");
}

/* One unordered bulk insert of the history entries; executes and frees it. */
static int
history_bulk(struct lane *l, mongoc_collection_t *hist, const struct event *evs, const long *idx,
    long k)
{
	bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));
	mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(hist, opts);

	bson_destroy(opts);
	for (long j = 0; j < k; j++) {
		bson_t *entry = event_entry(&evs[idx[j]]);

		mongoc_bulk_operation_insert(bulk, entry);
		bson_destroy(entry);
	}
	return bulk_run(l, bulk, "nInserted", NULL, &l->inserted, "insert the history entries");
}

/* A lane's batch, as the consumer writes one: rounds of the first unwritten event of each user,
 * in stream order; each round an ordered bulk of its documents (split at bulk_max), then an
 * unordered bulk insert of their history entries. evs is in stream order, so a user's versions
 * come in order. */
static int
write_batch(struct lane *l, mongoc_collection_t *coll, mongoc_collection_t *hist,
    const struct event *evs, long k)
{
	long *round = l->round, nr;
	int r = 0;

	/* An event's round is the number of events of its user before it in the batch. */
	for (long i = 0; i < k; i++) {
		l->nth[i] = 0;
		for (long j = 0; j < i; j++)
			if (evs[j].user == evs[i].user)
				l->nth[i]++;
	}
	do {
		nr = 0;
		for (long i = 0; i < k; i++)
			if (l->nth[i] == r)
				round[nr++] = i;
		for (long j = 0; j < nr; j += l->run->bulk_max) {
			long m = nr - j < l->run->bulk_max ? nr - j : l->run->bulk_max;

			if (docs_bulk(l, coll, evs, round + j, m) != 0)
				return -1;
		}
		if (nr > 0 && l->run->history && history_bulk(l, hist, evs, round, nr) != 0)
			return -1;
		r++;
	} while (nr > 0);
	return 0;
}

/* The lane of a user, as the consumer picks it (notification-consumer/applier.c, lane_of()). */
static long
lane_of(int64_t user, long lanes)
{
	uint64_t h = (uint64_t)user * 0x9e3779b97f4a7c15ULL;

	return (long)((h >> 32) % (uint64_t)lanes);
}

static void *
lane_run(void *arg)
{
	struct lane *l = arg;
	struct run *r = l->run;
	mongoc_collection_t *coll, *hist;
	long cap = r->batched ? r->batch : 1, i = 0;
	struct event *evs = calloc((size_t)cap, sizeof(*evs));

	l->round = calloc((size_t)cap, sizeof(*l->round));
	l->nth = calloc((size_t)cap, sizeof(*l->nth));
	coll = mongoc_client_get_collection(l->cl, "bench_db", "user_notifications");
	hist = mongoc_client_get_collection(l->cl, "bench_db", "user_notification_events");
	pthread_barrier_wait(&r->start);
	while (i < r->n && !l->failed) {
		double t1, t2;
		long k = 0;
		int rc;

		/* The next batch: up to cap of this lane's events, in stream order. */
		for (; i < r->n && k < cap; i++)
			if (lane_of(i % r->users + 1, r->lanes) == l->id)
				event_make(&evs[k++], r, i);
		if (k == 0)
			break;
		t1 = now_s();
		rc = r->batched ? write_batch(l, coll, hist, evs, k) :
		    write_one(l, coll, hist, &evs[0]);
		if (rc != 0) {
			l->failed = 1;
			break;
		}
		t2 = now_s();
		l->lat[l->units++] = t2 - t1;
		for (long j = 0; j < k; j++)
			r->done[evs[j].g - 1] = t2 - r->t0;
	}
	free(evs);
	free(l->round);
	free(l->nth);
	mongoc_collection_destroy(coll);
	mongoc_collection_destroy(hist);
	return NULL;
}

/* The consumer's two history indexes, one command each: FerretDB 1.24 drops the connection when
 * one createIndexes names several indexes that all exist already. */
static int
create_indexes(mongoc_client_t *cl)
{
	mongoc_collection_t *hist = mongoc_client_get_collection(cl, "bench_db",
	    "user_notification_events");
	bson_error_t e;
	int rc = 0;

	for (int k = 0; k < 2 && rc == 0; k++) {
		bson_t *cmd = k == 0 ?
		    BCON_NEW("createIndexes", BCON_UTF8("user_notification_events"), "indexes", "[", "{",
			"key", "{", "event_id", BCON_INT32(1), "}", "name", BCON_UTF8("event_id_unique"),
			"unique", BCON_BOOL(true), "}", "]") :
		    BCON_NEW("createIndexes", BCON_UTF8("user_notification_events"), "indexes", "[", "{",
			"key", "{", "user_id", BCON_INT32(1), "version", BCON_INT32(1), "}",
			"name", BCON_UTF8("user_id_version"), "}", "]");

		if (!mongoc_collection_write_command_with_opts(hist, cmd, NULL, NULL, &e)) {
			fprintf(stderr, "mongo_upsert: could not create an index: %s\n", e.message);
			rc = -1;
		}
		bson_destroy(cmd);
	}
	mongoc_collection_destroy(hist);
	return rc;
}

/* Seconds from the start until the first tenth of the events had completed, and from the
 * completion of nine tenths to the last. Sorts done: done[k] is then when k + 1 events were. */
static void
tenths(double *done, long n, double *first, double *last)
{
	long tenth = n / 10 > 0 ? n / 10 : 1;

	qsort(done, (size_t)n, sizeof(double), cmp_double);
	*first = done[tenth - 1];
	*last = done[n - 1] - (n - tenth - 1 >= 0 ? done[n - tenth - 1] : 0);
}

int
main(int argc, char **argv)
{
	struct run r = { 0 };
	struct lane *lanes;
	mongoc_uri_t *uri;
	bson_error_t e;
	pthread_t *th;
	double t, first, last, *lat;
	long units = 0, applied = 0, inserted = 0, tenth;
	int mode, rc = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: mongo_upsert <uri> <count> [mode 0-3] [users] [lanes] "
		    "[batch] [bulk]\n");
		return 2;
	}
	r.uri = argv[1];
	r.n = atol(argv[2]);
	mode = argc > 3 ? atoi(argv[3]) : 3;
	r.users = argc > 4 ? atol(argv[4]) : r.n;
	r.lanes = argc > 5 ? atol(argv[5]) : 1;
	r.batch = argc > 6 ? atol(argv[6]) : 64;
	r.bulk_max = argc > 7 ? atol(argv[7]) : r.batch;
	if (r.n < 1 || r.users < 1 || r.lanes < 1 || r.batch < 1 || r.bulk_max < 1 || mode < 0 ||
	    mode > 3) {
		fprintf(stderr, "mongo_upsert: count, users, lanes, batch and bulk must be at least 1, "
		    "mode 0 to 3\n");
		return 2;
	}
	r.history = mode & 1;
	r.batched = mode & 2;
	mongoc_init();
	uri = mongoc_uri_new_with_error(r.uri, &e);
	if (uri == NULL) {
		fprintf(stderr, "mongo_upsert: invalid uri: %s\n", e.message);
		return 2;
	}
	if (!mongoc_uri_has_option(uri, MONGOC_URI_SOCKETTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 60000);
	lanes = calloc((size_t)r.lanes, sizeof(*lanes));
	th = calloc((size_t)r.lanes, sizeof(*th));
	r.done = calloc((size_t)r.n, sizeof(double));
	pthread_barrier_init(&r.start, NULL, (unsigned)r.lanes + 1);
	for (long i = 0; i < r.lanes; i++) {
		lanes[i].run = &r;
		lanes[i].id = i;
		lanes[i].lat = calloc((size_t)r.n, sizeof(double));
		lanes[i].cl = mongoc_client_new_from_uri(uri);
		if (lanes[i].cl == NULL) {
			fprintf(stderr, "mongo_upsert: could not make a client\n");
			return 1;
		}
	}
	mongoc_uri_destroy(uri);
	if (r.history && create_indexes(lanes[0].cl) != 0)
		return 1;
	for (long i = 0; i < r.lanes; i++)
		pthread_create(&th[i], NULL, lane_run, &lanes[i]);
	r.t0 = now_s();
	pthread_barrier_wait(&r.start);
	for (long i = 0; i < r.lanes; i++)
		pthread_join(th[i], NULL);
	t = now_s() - r.t0;
	for (long i = 0; i < r.lanes; i++) {
		if (lanes[i].failed) {
			fprintf(stderr, "mongo_upsert: lane %ld: %s\n", i, lanes[i].err);
			rc = 1;
		}
		units += lanes[i].units;
		applied += lanes[i].applied;
		inserted += lanes[i].inserted;
	}
	if (rc != 0)
		return rc;
	/* A loop that skipped writes would look fast: every event must have taken effect. */
	if (applied != r.n || (r.history && inserted != r.n)) {
		fprintf(stderr, "mongo_upsert: %ld of %ld documents written, %ld history entries\n",
		    applied, r.n, inserted);
		return 1;
	}
	lat = calloc((size_t)units, sizeof(double));
	for (long i = 0, u = 0; i < r.lanes; i++)
		for (long j = 0; j < lanes[i].units; j++)
			lat[u++] = lanes[i].lat[j];
	qsort(lat, (size_t)units, sizeof(double), cmp_double);
	printf("{\"events\": %ld, \"mode\": %d, \"lanes\": %ld, \"batch\": %ld, \"users\": %ld, "
	    "\"seconds\": %.4f, \"rate\": %.1f, \"unit\": \"%s\", \"units\": %ld, "
	    "\"p50_ms\": %.4f, \"p99_ms\": %.4f, ", r.n, mode, r.lanes, r.batched ? r.batch : 1,
	    r.users, t, r.n / t, r.batched ? "batch" : "event", units, lat[units / 2] * 1e3,
	    lat[(units * 99) / 100] * 1e3);
	tenths(r.done, r.n, &first, &last);
	tenth = r.n / 10 > 0 ? r.n / 10 : 1;
	/* The events after the first <users> done, the updates as the consumer's applied count
	 * sees them: the first and the last tenth of those, whether an update costs more as the
	 * collection fills, without the creations' lower cost in the first tenth. */
	if (r.n - r.users >= 10) {
		long m = r.n - r.users, ut = m / 10;

		printf("\"updates_first_tenth_mean_ms\": %.4f, \"updates_last_tenth_mean_ms\": %.4f, ",
		    (r.done[r.users + ut - 1] - r.done[r.users - 1]) / ut * 1e3,
		    (r.done[r.n - 1] - r.done[r.n - 1 - ut]) / ut * 1e3);
	}
	printf("\"first_tenth_mean_ms\": %.4f, \"last_tenth_mean_ms\": %.4f}\n",
	    first / tenth * 1e3, last / tenth * 1e3);
	for (long i = 0; i < r.lanes; i++) {
		mongoc_client_destroy(lanes[i].cl);
		free(lanes[i].lat);
	}
	free(lanes);
	free(th);
	free(lat);
	free(r.done);
	mongoc_cleanup();
	return 0;
}
