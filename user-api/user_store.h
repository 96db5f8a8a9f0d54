/* The users table and its outbox: every change writes the user row and its event in one statement. */
#ifndef USER_API_USER_STORE_H
#define USER_API_USER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pg.h"
#include "user_input.h"

/* What a call on the store came to. Each value has one meaning, and the handlers map each to one
 * HTTP answer (reply_store_error() in handlers.c). */
enum user_store_result {
	USER_STORE_OK,
	USER_STORE_NOT_FOUND,		/* no user with this id */
	USER_STORE_EMAIL_TAKEN,		/* another user has this email, in any letter case */
	USER_STORE_STALE,		/* If-Match named another version */
	USER_STORE_KEY_REUSED,		/* Idempotency-Key seen before with another body */
	USER_STORE_UNAVAILABLE,		/* PostgreSQL unreachable, overloaded or timed out: try again */
	USER_STORE_ERROR,		/* anything else: a bug, a schema mismatch, out of memory */
};

/* Set once at start (user-api/settings.c fills it from the environment). */
struct user_store_config {
	struct pg_settings pg;
	long idempotency_ttl_ms;	/* how long an Idempotency-Key is remembered */
	long reconnect_holdoff_ms;	/* after a failed connect, fail fast for this long */
	long key_sweep_batch;		/* expired keys deleted per statement */
};

/* A user (or a page of users) as rendered by PostgreSQL. json is malloc()ed;
 * user_result_release() frees it. */
struct user_result {
	int64_t id;
	int64_t version;
	unsigned status;	/* the stored status of an idempotent replay, else 0 */
	char *json;
	int64_t fetched;	/* list: rows read, up to limit + 1; more than limit: a next page exists */
	int64_t last_id;	/* list: id of the last user in json, 0 when none */
};

struct write_meta {
	const char *traceparent;	/* stored with the event */
	const char *idempotency_key;	/* POST only, may be NULL */
	/* If-Match as a PostgreSQL bigint[] literal of the acceptable versions ("{3,4}"; "{}" matches
	 * nothing), or NULL for no precondition (also "*": the user only has to exist). */
	const char *if_match;
};

/* Sets the configuration of every thread's store (copied); call once, before any
 * user_store_get(). Returns -1 with err filled when the per-thread stores cannot be set up. */
int user_store_configure(const struct user_store_config *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The calling thread's store, connected lazily; never NULL. Its connection closes when the thread
 * exits. */
struct user_store *user_store_get(void);

/* Every call below fills err with what went wrong when it returns anything but USER_STORE_OK; on
 * USER_STORE_OK the caller releases *out with user_result_release(). USER_STORE_UNAVAILABLE and
 * USER_STORE_ERROR can come from any of them. */

/* Creates a user with its user_created event: OK (out->status is non-zero when an earlier request
 * with the same Idempotency-Key is replayed: out holds its stored answer and nothing was written),
 * EMAIL_TAKEN, KEY_REUSED. */
enum user_store_result user_store_create(struct user_store *s, const struct user_input *in,
    const struct write_meta *m, struct user_result *out, char *err, size_t errlen);
/* Replaces a user's name and email with a user_updated event: OK, NOT_FOUND, STALE, EMAIL_TAKEN. */
enum user_store_result user_store_update(struct user_store *s, int64_t id, const struct user_input *in,
    const struct write_meta *m, struct user_result *out, char *err, size_t errlen);
/* Deletes a user with a user_deleted event: OK, NOT_FOUND, STALE. */
enum user_store_result user_store_delete(struct user_store *s, int64_t id, const struct write_meta *m,
    char *err, size_t errlen);
/* OK or NOT_FOUND. */
enum user_store_result user_store_find(struct user_store *s, int64_t id, struct user_result *out,
    char *err, size_t errlen);
/* A page of at most limit users with id > after, in id order, as a JSON array. It reads one row
 * more than the page holds, so out->fetched > limit tells that a next page exists. */
enum user_store_result user_store_list(struct user_store *s, int64_t after, long limit,
    struct user_result *out, char *err, size_t errlen);
/* Runs SELECT 1; USER_STORE_OK when PostgreSQL answers. */
enum user_store_result user_store_ping(struct user_store *s, char *err, size_t errlen);
/* Deletes expired idempotency keys, key_sweep_batch per statement, batch after batch until one
 * comes back short (so keys cannot expire faster than they are removed) or shutdown is requested.
 * *deleted counts the keys removed, also when a later batch fails. */
enum user_store_result user_store_expire_keys(struct user_store *s, long *deleted, char *err,
    size_t errlen);

void user_result_release(struct user_result *r);

#endif
