/* The users table and its outbox: every change writes the user row and its event in one statement. */
#ifndef USER_API_USER_STORE_H
#define USER_API_USER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pg.h"
#include "user_input.h"

enum store_result {
	STORE_OK,
	STORE_NOT_FOUND,
	STORE_EMAIL_TAKEN,	/* another user has this email, in any letter case */
	STORE_STALE,		/* If-Match named another version */
	STORE_KEY_REUSED,	/* Idempotency-Key seen before with another body */
	STORE_UNAVAILABLE,	/* PostgreSQL unreachable or overloaded: try again */
	STORE_ERROR,
};

/* A user as rendered by PostgreSQL. json is malloc()ed; user_result_release() frees it. */
struct user_result {
	int64_t id;
	int64_t version;
	unsigned status;	/* the stored status of an idempotent replay, else 0 */
	char *json;
	int64_t count;		/* list: rows in the page */
	int64_t last_id;	/* list: id of the last row */
};

struct write_meta {
	const char *traceparent;	/* stored with the event */
	const char *idempotency_key;	/* POST only, may be NULL */
	/* If-Match as a PostgreSQL bigint[] literal of the acceptable versions ("{3,4}"; "{}" matches
	 * nothing), or NULL for no precondition (also "*": the user only has to exist). */
	const char *if_match;
};

/* Sets the connection settings for every thread's store; call once before serving. */
void user_store_configure(const struct pg_settings *pg, long idempotency_ttl_s);

/* The calling thread's store, connected lazily; its connection closes when the thread exits. */
struct user_store *user_store_get(void);

enum store_result user_store_create(struct user_store *s, const struct user_input *in,
    const struct write_meta *m, struct user_result *out, char *err, size_t errlen);
enum store_result user_store_update(struct user_store *s, int64_t id, const struct user_input *in,
    const struct write_meta *m, struct user_result *out, char *err, size_t errlen);
enum store_result user_store_delete(struct user_store *s, int64_t id, const struct write_meta *m,
    char *err, size_t errlen);
enum store_result user_store_find(struct user_store *s, int64_t id, struct user_result *out,
    char *err, size_t errlen);
/* A page of users with id > after, in id order, as a JSON array. */
enum store_result user_store_list(struct user_store *s, int64_t after, long limit,
    struct user_result *out, char *err, size_t errlen);
/* Runs SELECT 1; STORE_OK when PostgreSQL answers. */
enum store_result user_store_ping(struct user_store *s, char *err, size_t errlen);
/* Deletes expired idempotency keys, at most USER_STORE_EXPIRE_BATCH at a time. */
#define USER_STORE_EXPIRE_BATCH 1000
enum store_result user_store_expire_keys(struct user_store *s, long *deleted, char *err, size_t errlen);

void user_result_release(struct user_result *r);

#endif
