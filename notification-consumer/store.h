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

/* Once per process, before any store_new() / after the last store_free(). */
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

enum store_result {
	STORE_APPLIED,	/* the copy moved to the event's version */
	STORE_STALE,	/* the copy was already at or past it: no effect */
	STORE_ERROR,	/* MongoDB did not confirm: try again later */
};

/* Applies ev: upsert filtered by {_id, version < v} with the full state; 11000 means stale.
 * published_us is the stream's timestamp of the message. Before the upsert it completes the
 * history entry of the event the document holds, should a crash have left it out. The history
 * gets one entry per event id: applied (with applied_at and applied_by), or "superseded" for a
 * stale event it did not know. An event that takes effect again after its entry was written
 * (another writer took the copy back) is counted on that entry as "reapplied", so the history
 * shows every effect, not only the first. */
enum store_result store_apply(struct store *s, const struct event *ev, int64_t published_us,
    uint64_t stream_seq, char *err, size_t errlen);

/* Reads user id into *out (a new reference the caller json_decref()s) as {user_id, name, email,
 * updated_at, version, deleted}. Returns 1 when found, 0 when absent, -1 on error. */
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
/* Replaces collection to with collection from (drop, then rename). */
int store_swap(struct store *s, const char *from, const char *to, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
