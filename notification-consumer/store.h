/* The MongoDB copy: a version-guarded upsert of each user's full state, the history of applied
 * events, and the reads the HTTP API serves. Safe to use from any thread (a client pool). */
#ifndef CONSUMER_STORE_H
#define CONSUMER_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

struct store;

/* Once per process, before any store_new() / after the last store_free(). The init sets up the
 * MongoDB driver, with its log messages as lines of ours: call it only once the arguments are
 * read, so that --help answers without it. */
void store_library_init(void);
void store_library_cleanup(void);

struct store_config {
	const char *uri;
	const char *db;
	const char *collection;	/* users' current state */
	const char *history;	/* applied events */
	long timeout_ms;	/* server selection, connect and socket timeout */
	const char *appname;
	const char *instance;	/* names this process in what it writes; NULL: a new random one */
};

/* Parses the URI and makes the pool; does not connect. The caller store_free()s the result;
 * NULL with err filled for a bad URI. */
struct store *store_new(const struct store_config *c, char *err, size_t errlen);
void store_free(struct store *s);
/* The instance id this store writes as applied_by: one per process, random, so that the history
 * tells which process applied each event. Owned by s. */
const char *store_instance(const struct store *s);

/* Round trip to the server. */
int store_ping(struct store *s, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Creates the history's unique event_id index and its (user_id, version) index; idempotent. */
int store_prepare(struct store *s, char *err, size_t errlen) __attribute__((warn_unused_result));

/* What applying an event did to the copy (not user-api's enum user_store_result). */
enum copy_store_result {
	COPY_STORE_APPLIED,	/* the copy moved to the event's version */
	COPY_STORE_STALE,	/* the copy was already at or past it: no effect */
	COPY_STORE_EARLY,	/* a version between the copy's and the event's is missing: not applied */
	COPY_STORE_ERROR,	/* MongoDB did not confirm: try again later */
};

/* Which versions an event may move the copy from. */
enum copy_store_order {
	/* Only from the version just before the event's (no document for a version 1): an event of
	 * a later version is COPY_STORE_EARLY and changes nothing, so a user's versions take effect
	 * in order and none is skipped. A user_snapshot is a full-state rebase and applies over any
	 * older version. One write per event; only a write that matched nothing reads the
	 * document, to tell a stale event from an early one. */
	COPY_STORE_IN_ORDER,
	/* From any older version, over a gap: for an event that waited its time for the versions
	 * before it (CONSUMER_GAP_WAIT), a replay's, and writing again what another writer took
	 * back. */
	COPY_STORE_OVER_GAP,
};

/* Applies ev as order allows: the full state, guarded by the version; a duplicate or an older
 * version is stale. published_us is the stream's timestamp of the message. The document records
 * the event that took effect last (event_id, every field of it) and the write that applied it
 * (applied_by, applied_at). Before the write it completes the history entry of the event the
 * document holds, should a crash or a pause have left it out. The history gets one entry per
 * event id: applied (with applied_at and applied_by of the write that took effect), or
 * "superseded" for a stale event it did not know; a stale event that finds itself in the
 * document took effect (its writer stopped before the entry) and gets the applied entry, from
 * the document. An early event writes nothing. An event that takes effect again after its entry
 * was written (another writer took the copy back) is counted on that entry as "reapplied", so the
 * history shows every effect, not only the first; an entry that already names the write adds
 * nothing. A deletion leaves a tombstone without name and email and, applied now or found stale,
 * removes name and email from every history entry of its user before its own entry is written;
 * a stale event whose user is deleted is recorded without them, so nothing brings a deleted
 * user's personal data back. One write per event, and no read, unless it is stale or early (or
 * a deletion: one more update). On COPY_STORE_EARLY
 * *copy_version (unless NULL) is the version the copy is at, 0 without a document; on
 * COPY_STORE_ERROR err says why. */
enum copy_store_result store_apply(struct store *s, const struct event *ev,
    enum copy_store_order order, int64_t published_us, uint64_t stream_seq, int64_t *copy_version,
    char *err, size_t errlen);

/* What store_apply_batch() did with one event. */
enum copy_batch_outcome {
	COPY_BATCH_APPLIED,	/* the copy moved to its version, and its history entry is written */
	COPY_BATCH_ALONE,	/* not known to have taken effect: apply it with store_apply(), before
				 * any later event of its user */
	COPY_BATCH_NOT_RUN,	/* not tried (the bulk stopped before it): in the next batch, or alone */
};

struct copy_batch_item {
	const struct event *ev;		/* borrowed */
	int64_t published_us;		/* the stream's timestamp of its message */
	uint64_t stream_seq;
	enum copy_batch_outcome outcome;	/* set by store_apply_batch() */
};

/* Applies the events of items in order (COPY_STORE_IN_ORDER) with as few round trips as it can:
 * one ordered bulk write of the documents, one bulk insert of the history entries (plus, once per
 * user in a process's life, the check of store_apply(), and for each deletion the erasure of its
 * user's personal data that store_apply() makes). At most one event per user: a user's
 * next event goes in the next batch, once this one is settled. Every event it could not prove
 * applied (stale, early, a write or an entry that failed, a bulk the server refused) is
 * COPY_BATCH_ALONE, for store_apply() to settle with its reads; that is always safe, as a write of
 * the bulk that did land makes the event stale with itself in the document. The failpoint
 * consumer.between_upsert_and_history is hit once per applied event, between the two bulks.
 * Returns the number applied; err holds the last failure, if any (empty when none). */
size_t store_apply_batch(struct store *s, struct copy_batch_item *items, size_t n, char *err,
    size_t errlen);

/* Forgets which users' documents are known to hold an event whose history entry exists (each
 * user's first write in a process's life checks it, then trusts it). Call it when this process
 * applies again after another process may have written the copy (it took the lease anew): that
 * process may have stopped between a write and its history entry, and the next write here would
 * overwrite the document that can restore the entry. */
void store_forget_verified(struct store *s);

/* Reads user id into *out as {user_id, name, email, updated_at, version, deleted}: a new reference
 * the caller json_decref()s, or NULL when the copy has no document of the user. Returns 0, or -1
 * with err filled. */
int store_get_user(struct store *s, int64_t id, json_t **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Up to limit users with id > after that are not deleted, in id order, as a new JSON array. */
int store_list_users(struct store *s, int64_t after, long limit, json_t **out, char *err,
    size_t errlen) __attribute__((warn_unused_result));
/* The history of user id in version order, as a new JSON array: the applied events only, or
 * with superseded as well the stale events recorded without effect. */
int store_list_events(struct store *s, int64_t id, bool superseded, json_t **out, char *err,
    size_t errlen) __attribute__((warn_unused_result));

/* Reads the stored versions of the n users in ids into versions (0 for a user without a
 * document), in one query. */
int store_versions(struct store *s, const int64_t *ids, size_t n, int64_t *versions, char *err,
    size_t errlen) __attribute__((warn_unused_result));

/* Drops a collection of the store's database; a missing one is fine. */
int store_drop(struct store *s, const char *collection, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Makes collection to (the live copy) hold what collection from (a fresh one) holds, one
 * document at a time, so that a reader never finds a user missing or the copy empty: each
 * document of from replaces its user's document in to, then, with prune, the documents of to
 * whose user from does not have are removed (without it they stay: the stream from could be
 * rebuilt from no longer held every user); a document the live consumer wrote from an event past
 * stream sequence until is newer than the fresh one and stays. Then from is dropped. A server that can
 * rename over a collection would do it in one step, but FerretDB 1.24 has no dropTarget, and a
 * drop then a rename leaves readers an empty copy in between. */
int store_merge(struct store *s, const char *from, const char *to, uint64_t until, bool prune,
    char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
