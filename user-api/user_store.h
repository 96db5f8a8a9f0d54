/* The users table and its outbox: every change writes the user row and its event in one statement. */
#ifndef USER_API_USER_STORE_H
#define USER_API_USER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pg.h"
#include "pgpipe.h"
#include "user_input.h"
#include "write_headers.h"

struct evloop;

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
	long connections;		/* of the request path, each with statements pipelined */
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

/* A call on the store: the caller allocates it, fills nothing, passes it to one of the calls
 * below and keeps it alive until done(c) runs on the event loop's thread (never before the call
 * returns). Then rc says how it ended: on USER_STORE_OK res holds the answer (the caller releases
 * it with user_result_release()), on anything else err says what went wrong. */
struct user_store_call {
	enum user_store_result rc;
	struct user_result res;
	char err[512];
	void (*done)(struct user_store_call *c);
	void *arg;			/* the caller's */
	/* the store's */
	struct user_store *s;
	struct pgpipe_query q;
	int step;
	int statement;			/* the step's (for its error message) */
	int64_t id;
	struct user_input in;
	char key[IDEMPOTENCY_KEY_MAX + 1], traceparent[56], if_match[IF_MATCH_MAX];
	bool has_key, has_if_match;
	char constraint[64];
};

/* The store of the process: config copied, a pool of config->connections PostgreSQL connections
 * on loop (made before the HTTP server is put on the loop: see common/pgpipe.h). NULL with err
 * filled on failure. */
struct user_store *user_store_new(struct evloop *loop, const struct user_store_config *config,
    char *err, size_t errlen);
/* After the loop has stopped. */
void user_store_free(struct user_store *s);

/* Creates a user with its user_created event: OK (res.status is non-zero when an earlier request
 * with the same Idempotency-Key is replayed: res holds its stored answer and nothing was
 * written), EMAIL_TAKEN, KEY_REUSED. */
void user_store_create(struct user_store *s, struct user_store_call *c, const struct user_input *in,
    const struct write_meta *m);
/* Replaces a user's name and email with a user_updated event: OK, NOT_FOUND, STALE, EMAIL_TAKEN. */
void user_store_update(struct user_store *s, struct user_store_call *c, int64_t id,
    const struct user_input *in, const struct write_meta *m);
/* Deletes a user with a user_deleted event: OK, NOT_FOUND, STALE. */
void user_store_delete(struct user_store *s, struct user_store_call *c, int64_t id,
    const struct write_meta *m);
/* OK or NOT_FOUND. */
void user_store_find(struct user_store *s, struct user_store_call *c, int64_t id);
/* A page of at most limit users with id > after, in id order, as a JSON array. It reads one row
 * more than the page holds, so res.fetched > limit tells that a next page exists. */
void user_store_list(struct user_store *s, struct user_store_call *c, int64_t after, long limit);
/* Whether a PostgreSQL connection is open; when none is, err says why. Any thread. */
bool user_store_ready(struct user_store *s, char *err, size_t errlen);

/* Deletes expired idempotency keys, key_sweep_batch per statement, batch after batch until one
 * comes back short (so keys cannot expire faster than they are removed) or shutdown is requested.
 * *deleted counts the keys removed, also when a later batch fails. Blocking, on a connection of
 * the calling thread's own (the main thread's, between its sleeps). */
enum user_store_result user_store_expire_keys(struct user_store *s, long *deleted, char *err,
    size_t errlen);

void user_result_release(struct user_result *r);

#endif
