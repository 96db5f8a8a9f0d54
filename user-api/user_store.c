/* One PostgreSQL connection per HTTP worker thread, with prepared statements. Each write is one
 * statement whose data-modifying CTEs insert or change the user row and insert its outbox row, so
 * both commit together or not at all, in one round trip. The UPDATE (or DELETE) takes the row lock
 * before the outbox INSERT draws its id, so one user's events get ids in version order. */
#include "user_store.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "event_contract.h"
#include "log.h"
#include "random.h"
#include "shutdown.h"

struct user_store {
	PGconn *conn;
};

/* When a connection attempt last failed, shared by all threads: while PostgreSQL is down one
 * attempt per holdoff finds out, and the first success lets every thread connect again. */
static _Atomic int64_t store_failed_at_ms;

struct statement {
	const char *name;
	const char *sql;
	int nparams;
};

#define USER_JSON "user_json(u.id, u.name, u.email, u.version, u.created_at, u.updated_at)"

enum { ST_CREATE, ST_UPDATE, ST_DELETE, ST_FIND, ST_VERSION, ST_LIST, ST_KEY_GET, ST_KEY_DROP,
	ST_KEYS_EXPIRE, ST_COUNT };

static const struct statement statements[ST_COUNT] = {
	[ST_CREATE] = { "user_create",
		"WITH u AS ("
		"  INSERT INTO users (name, email) VALUES ($1::text, $2::text) RETURNING *"
		"), o AS ("
		"  INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers, payload,"
		"                      schema_version)"
		"  SELECT $3::uuid, u.id, $7::text, u.version, $8::text,"
		"         jsonb_build_object('traceparent', $4::text),"
		"         user_event_payload(u.id, u.name, u.email, u.version, u.updated_at, false), $9::smallint"
		"  FROM u"
		"), k AS ("
		"  INSERT INTO idempotency_keys (key, fingerprint, status, response_body, user_id, expires_at)"
		"  SELECT $5::text, encode(sha256(convert_to($1::text || E'\\n' || $2::text, 'UTF8')), 'hex'),"
		"         201, " USER_JSON "::text, u.id, clock_timestamp() + make_interval(secs => $6::float8)"
		"  FROM u WHERE $5::text IS NOT NULL"
		") SELECT u.id, u.version, " USER_JSON "::text FROM u", 9 },
	[ST_UPDATE] = { "user_update",
		"WITH u AS ("
		"  UPDATE users SET name = $2::text, email = $3::text, version = version + 1,"
		"                   updated_at = clock_timestamp()"
		"  WHERE id = $1::bigint AND ($4::bigint[] IS NULL OR version = ANY ($4::bigint[])) RETURNING *"
		"), o AS ("
		"  INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers, payload,"
		"                      schema_version)"
		"  SELECT $5::uuid, u.id, $7::text, u.version, $8::text,"
		"         jsonb_build_object('traceparent', $6::text),"
		"         user_event_payload(u.id, u.name, u.email, u.version, u.updated_at, false), $9::smallint"
		"  FROM u"
		") SELECT u.id, u.version, " USER_JSON "::text FROM u", 9 },
	[ST_DELETE] = { "user_delete",
		"WITH u AS ("
		"  DELETE FROM users WHERE id = $1::bigint AND ($2::bigint[] IS NULL OR version = ANY ($2::bigint[]))"
		"  RETURNING *"
		"), o AS ("
		"  INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers, payload,"
		"                      schema_version)"
		"  SELECT $3::uuid, u.id, $5::text, u.version + 1, $6::text,"
		"         jsonb_build_object('traceparent', $4::text),"
		"         user_event_payload(u.id, NULL, NULL, u.version + 1, clock_timestamp(), true)"
		"           - " EVENT_PERSONAL_KEYS_SQL ", $7::smallint"
		"  FROM u"
		") SELECT u.id FROM u", 7 },
	[ST_FIND] = { "user_find",
		"SELECT u.id, u.version, " USER_JSON "::text FROM users u WHERE u.id = $1::bigint", 1 },
	[ST_VERSION] = { "user_version", "SELECT version FROM users WHERE id = $1::bigint", 1 },
	/* One row more than the page: it is not rendered, its presence says a next page exists. */
	[ST_LIST] = { "user_list",
		"SELECT coalesce(jsonb_agg(" USER_JSON " ORDER BY u.id) FILTER (WHERE u.n <= $2::bigint),"
		"                '[]'::jsonb)::text,"
		"       count(*), coalesce(max(u.id) FILTER (WHERE u.n <= $2::bigint), 0)"
		"  FROM (SELECT users.*, row_number() OVER (ORDER BY id) AS n FROM users"
		"         WHERE id > $1::bigint ORDER BY id LIMIT $2::bigint + 1) u", 2 },
	[ST_KEY_GET] = { "idempotency_get",
		"SELECT fingerprint = encode(sha256(convert_to($2::text || E'\\n' || $3::text, 'UTF8')), 'hex'),"
		"       status, response_body, user_id, expires_at > clock_timestamp()"
		"  FROM idempotency_keys WHERE key = $1::text", 3 },
	[ST_KEY_DROP] = { "idempotency_drop",
		"DELETE FROM idempotency_keys WHERE key = $1::text AND expires_at <= clock_timestamp()", 1 },
	[ST_KEYS_EXPIRE] = { "idempotency_expire",
		"DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys"
		"  WHERE expires_at <= clock_timestamp() LIMIT $1::bigint)", 1 },
};

static struct user_store_config store_config;

/* Each thread's store lives in thread-local storage, so getting it cannot fail; the key exists
 * only for its destructor, which closes the thread's connection when the thread exits. */
static _Thread_local struct user_store thread_store;
static pthread_key_t store_key;

static void
store_release(void *p)
{
	struct user_store *s = p;

	if (s->conn) {
		PQfinish(s->conn);
		s->conn = NULL;
	}
}

int
user_store_configure(const struct user_store_config *c, char *err, size_t errlen)
{
	int rc;

	store_config = *c;
	if ((rc = pthread_key_create(&store_key, store_release)) != 0) {
		snprintf(err, errlen, "could not set up the per-thread user stores: %s", strerror(rc));
		return -1;
	}
	return 0;
}

struct user_store *
user_store_get(void)
{
	struct user_store *s = &thread_store;

	/* Registers the destructor with the thread's first call. Should that fail (it cannot for
	 * the first keys of a process), the connection stays open until the process exits. */
	if (pthread_getspecific(store_key) == NULL)
		(void)pthread_setspecific(store_key, s);
	return s;
}

static void
store_disconnect(struct user_store *s)
{
	if (s->conn) {
		PQfinish(s->conn);
		s->conn = NULL;
	}
}

/* An idle connection whose server went away still reports CONNECTION_OK until something is read
 * from it. Nothing should arrive on an idle connection of ours: anything readable is the server's
 * goodbye (or EOF), so the connection is replaced before a request is sent on it and a restart of
 * PostgreSQL costs no request. */
static bool
store_conn_alive(PGconn *c)
{
	struct pollfd p = { .fd = PQsocket(c), .events = POLLIN };

	if (PQstatus(c) != CONNECTION_OK || p.fd < 0)
		return false;
	return poll(&p, 1, 0) == 0;
}

/* Makes sure the store has a live, prepared connection. */
static enum user_store_result
store_connect(struct user_store *s, char *err, size_t errlen)
{
	if (s->conn != NULL && store_conn_alive(s->conn))
		return USER_STORE_OK;
	if (s->conn != NULL)
		store_disconnect(s);
	int64_t failed_at = atomic_load(&store_failed_at_ms);

	if (failed_at != 0 && mono_ms() - failed_at < store_config.reconnect_holdoff_ms) {
		snprintf(err, errlen, "PostgreSQL is unreachable");
		return USER_STORE_UNAVAILABLE;
	}
	s->conn = pg_connect(&store_config.pg, "user-api", err, errlen);
	if (s->conn == NULL) {
		/* Once per hold-off at most: the callers show only the headline. */
		log_warnx("%s", err);
		atomic_store(&store_failed_at_ms, mono_ms());
		return USER_STORE_UNAVAILABLE;
	}
	for (size_t i = 0; i < ST_COUNT; i++) {
		PGresult *r = PQprepare(s->conn, statements[i].name, statements[i].sql,
		    statements[i].nparams, NULL);

		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			char msg[512];
			bool lost = pg_connection_lost(s->conn, r);

			pg_error_text(s->conn, r, msg, sizeof(msg));
			snprintf(err, errlen, "could not prepare %s: %s", statements[i].name, msg);
			PQclear(r);
			store_disconnect(s);
			atomic_store(&store_failed_at_ms, mono_ms());
			return lost ? USER_STORE_UNAVAILABLE : USER_STORE_ERROR;
		}
		PQclear(r);
	}
	atomic_store(&store_failed_at_ms, 0);
	log_debug("user store connected");
	return USER_STORE_OK;
}

/* Runs a prepared statement. On failure the result is cleared, err filled, the connection dropped
 * when it is gone, and sqlstate (6 bytes) and constraint (64 bytes), if given, receive the error's
 * code and constraint name. */
static enum user_store_result
store_exec(struct user_store *s, int st, const char *const *params, PGresult **out,
    char *sqlstate, char *constraint, char *err, size_t errlen)
{
	enum user_store_result rc = store_connect(s, err, errlen);
	PGresult *r;
	ExecStatusType status;

	*out = NULL;
	if (sqlstate)
		sqlstate[0] = '\0';
	if (constraint)
		constraint[0] = '\0';
	if (rc != USER_STORE_OK)
		return rc;
	r = PQexecPrepared(s->conn, statements[st].name, statements[st].nparams, params, NULL, NULL, 0);
	status = PQresultStatus(r);
	if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
		*out = r;
		return USER_STORE_OK;
	}
	{
		const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
		const char *cons = r ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL;
		char msg[512];

		pg_error_text(s->conn, r, msg, sizeof(msg));
		snprintf(err, errlen, "%s failed: %s", statements[st].name, msg);
		if (sqlstate && state)
			snprintf(sqlstate, 6, "%s", state);
		if (constraint && cons)
			snprintf(constraint, 64, "%s", cons);
		if (pg_connection_lost(s->conn, r)) {
			PQclear(r);
			store_disconnect(s);
			return USER_STORE_UNAVAILABLE;
		}
		/* Statement timeout, lock timeout, too many connections: transient. */
		rc = state && (strcmp(state, "57014") == 0 || strcmp(state, "55P03") == 0 ||
		    strcmp(state, "53300") == 0 || strcmp(state, "40001") == 0 ||
		    strcmp(state, "40P01") == 0) ? USER_STORE_UNAVAILABLE : USER_STORE_ERROR;
		PQclear(r);
		return rc;
	}
}

static int64_t
field_i64(PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Copies a text field into *out; USER_STORE_ERROR with err filled when memory runs out. */
static enum user_store_result
field_dup(PGresult *r, int row, int col, char **out, char *err, size_t errlen)
{
	*out = strdup(PQgetvalue(r, row, col));
	if (*out == NULL) {
		snprintf(err, errlen, "out of memory");
		return USER_STORE_ERROR;
	}
	return USER_STORE_OK;
}

/* Reads the (id, version, json) row every user statement returns, and clears the result. */
static enum user_store_result
take_user(PGresult *r, struct user_result *out, char *err, size_t errlen)
{
	enum user_store_result rc;

	out->id = field_i64(r, 0, 0);
	out->version = field_i64(r, 0, 1);
	rc = field_dup(r, 0, 2, &out->json, err, errlen);
	PQclear(r);
	return rc;
}

static void
fmt_i64(char *buf, size_t n, int64_t v)
{
	snprintf(buf, n, "%lld", (long long)v);
}

/* Looks up an idempotency key. USER_STORE_OK with *replay set and out filled with the stored
 * answer (out->status non-zero) when the key was used with the same body; USER_STORE_OK with
 * *replay false when the key is unknown or expired (an expired one is removed);
 * USER_STORE_KEY_REUSED when it was used with another body. */
static enum user_store_result
key_lookup(struct user_store *s, const char *key, const struct user_input *in, bool *replay,
    struct user_result *out, char *err, size_t errlen)
{
	const char *params[3] = { key, in->name, in->email };
	PGresult *r;
	enum user_store_result rc = store_exec(s, ST_KEY_GET, params, &r, NULL, NULL, err, errlen);

	*replay = false;
	if (rc != USER_STORE_OK)
		return rc;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return USER_STORE_OK;
	}
	if (strcmp(PQgetvalue(r, 0, 4), "t") != 0) {
		PQclear(r);
		rc = store_exec(s, ST_KEY_DROP, params, &r, NULL, NULL, err, errlen);
		if (rc != USER_STORE_OK)
			return rc;
		PQclear(r);
		return USER_STORE_OK;
	}
	if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		PQclear(r);
		return USER_STORE_KEY_REUSED;
	}
	out->status = (unsigned)field_i64(r, 0, 1);
	out->id = field_i64(r, 0, 3);
	rc = field_dup(r, 0, 2, &out->json, err, errlen);
	PQclear(r);
	*replay = rc == USER_STORE_OK;
	return rc;
}

enum user_store_result
user_store_create(struct user_store *s, const struct user_input *in, const struct write_meta *m,
    struct user_result *out, char *err, size_t errlen)
{
	char event_id[37], ttl[24], sqlstate[6], constraint[64];
	const char *params[9] = { in->name, in->email, event_id, m->traceparent, m->idempotency_key, ttl,
		EVENT_TYPE_CREATED, EVENT_SUBJECT_CREATED, EVENT_SCHEMA_VERSION_TEXT };
	enum user_store_result rc;
	bool replay;
	PGresult *r;

	memset(out, 0, sizeof(*out));
	if (m->idempotency_key != NULL) {
		rc = key_lookup(s, m->idempotency_key, in, &replay, out, err, errlen);
		if (rc != USER_STORE_OK || replay)
			return rc;
	}
	uuid_new(event_id);
	fmt_i64(ttl, sizeof(ttl), store_config.idempotency_ttl_ms / 1000);
	rc = store_exec(s, ST_CREATE, params, &r, sqlstate, constraint, err, errlen);
	if (rc == USER_STORE_ERROR && strcmp(sqlstate, "23505") == 0) {
		/* A concurrent request with the same key may have won the race: replay its answer. */
		if (m->idempotency_key != NULL) {
			rc = key_lookup(s, m->idempotency_key, in, &replay, out, err, errlen);
			if (rc != USER_STORE_OK || replay)
				return rc;
		}
		if (strcmp(constraint, "users_email_lower_key") != 0)
			return USER_STORE_ERROR;
		snprintf(err, errlen, "a user with email \"%s\" already exists", in->email);
		return USER_STORE_EMAIL_TAKEN;
	}
	if (rc != USER_STORE_OK)
		return rc;
	return take_user(r, out, err, errlen);
}

/* After a write matched no row: was the user missing, or at another version? */
static enum user_store_result
explain_miss(struct user_store *s, int64_t id, char *err, size_t errlen)
{
	char idbuf[24];
	const char *params[1] = { idbuf };
	enum user_store_result rc;
	PGresult *r;

	fmt_i64(idbuf, sizeof(idbuf), id);
	rc = store_exec(s, ST_VERSION, params, &r, NULL, NULL, err, errlen);
	if (rc != USER_STORE_OK)
		return rc;
	if (PQntuples(r) == 0) {
		snprintf(err, errlen, "user %lld does not exist", (long long)id);
		rc = USER_STORE_NOT_FOUND;
	} else {
		snprintf(err, errlen, "user %lld is at version %s", (long long)id, PQgetvalue(r, 0, 0));
		rc = USER_STORE_STALE;
	}
	PQclear(r);
	return rc;
}

enum user_store_result
user_store_update(struct user_store *s, int64_t id, const struct user_input *in,
    const struct write_meta *m, struct user_result *out, char *err, size_t errlen)
{
	char idbuf[24], event_id[37], sqlstate[6], constraint[64];
	const char *params[9] = { idbuf, in->name, in->email, m->if_match, event_id, m->traceparent,
		EVENT_TYPE_UPDATED, EVENT_SUBJECT_UPDATED, EVENT_SCHEMA_VERSION_TEXT };
	enum user_store_result rc;
	PGresult *r;

	memset(out, 0, sizeof(*out));
	fmt_i64(idbuf, sizeof(idbuf), id);
	uuid_new(event_id);
	rc = store_exec(s, ST_UPDATE, params, &r, sqlstate, constraint, err, errlen);
	if (rc == USER_STORE_ERROR && strcmp(sqlstate, "23505") == 0) {
		snprintf(err, errlen, "a user with email \"%s\" already exists", in->email);
		return USER_STORE_EMAIL_TAKEN;
	}
	if (rc != USER_STORE_OK)
		return rc;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return explain_miss(s, id, err, errlen);
	}
	return take_user(r, out, err, errlen);
}

enum user_store_result
user_store_delete(struct user_store *s, int64_t id, const struct write_meta *m, char *err, size_t errlen)
{
	char idbuf[24], event_id[37];
	const char *params[7] = { idbuf, m->if_match, event_id, m->traceparent, EVENT_TYPE_DELETED,
		EVENT_SUBJECT_DELETED, EVENT_SCHEMA_VERSION_TEXT };
	enum user_store_result rc;
	PGresult *r;

	fmt_i64(idbuf, sizeof(idbuf), id);
	uuid_new(event_id);
	rc = store_exec(s, ST_DELETE, params, &r, NULL, NULL, err, errlen);
	if (rc != USER_STORE_OK)
		return rc;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return explain_miss(s, id, err, errlen);
	}
	PQclear(r);
	return USER_STORE_OK;
}

enum user_store_result
user_store_find(struct user_store *s, int64_t id, struct user_result *out, char *err, size_t errlen)
{
	char idbuf[24];
	const char *params[1] = { idbuf };
	enum user_store_result rc;
	PGresult *r;

	memset(out, 0, sizeof(*out));
	fmt_i64(idbuf, sizeof(idbuf), id);
	rc = store_exec(s, ST_FIND, params, &r, NULL, NULL, err, errlen);
	if (rc != USER_STORE_OK)
		return rc;
	if (PQntuples(r) == 0) {
		PQclear(r);
		snprintf(err, errlen, "user %lld does not exist", (long long)id);
		return USER_STORE_NOT_FOUND;
	}
	return take_user(r, out, err, errlen);
}

enum user_store_result
user_store_list(struct user_store *s, int64_t after, long limit, struct user_result *out, char *err,
    size_t errlen)
{
	char afterbuf[24], limitbuf[24];
	const char *params[2] = { afterbuf, limitbuf };
	enum user_store_result rc;
	PGresult *r;

	memset(out, 0, sizeof(*out));
	fmt_i64(afterbuf, sizeof(afterbuf), after);
	fmt_i64(limitbuf, sizeof(limitbuf), limit);
	rc = store_exec(s, ST_LIST, params, &r, NULL, NULL, err, errlen);
	if (rc != USER_STORE_OK)
		return rc;
	out->fetched = field_i64(r, 0, 1);
	out->last_id = field_i64(r, 0, 2);
	rc = field_dup(r, 0, 0, &out->json, err, errlen);
	PQclear(r);
	return rc;
}

enum user_store_result
user_store_ping(struct user_store *s, char *err, size_t errlen)
{
	enum user_store_result rc = store_connect(s, err, errlen);
	PGresult *r;

	if (rc != USER_STORE_OK)
		return rc;
	r = PQexec(s->conn, "SELECT 1");
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		pg_error_text(s->conn, r, err, errlen);
		PQclear(r);
		store_disconnect(s);
		return USER_STORE_UNAVAILABLE;
	}
	PQclear(r);
	return USER_STORE_OK;
}

enum user_store_result
user_store_expire_keys(struct user_store *s, long *deleted, char *err, size_t errlen)
{
	char batchbuf[24];
	const char *params[1] = { batchbuf };
	enum user_store_result rc;
	long n;

	*deleted = 0;
	fmt_i64(batchbuf, sizeof(batchbuf), store_config.key_sweep_batch);
	do {
		PGresult *r;

		rc = store_exec(s, ST_KEYS_EXPIRE, params, &r, NULL, NULL, err, errlen);
		if (rc != USER_STORE_OK)
			return rc;
		n = strtol(PQcmdTuples(r), NULL, 10);
		PQclear(r);
		*deleted += n;
	} while (n == store_config.key_sweep_batch && !shutdown_requested());
	return USER_STORE_OK;
}

void
user_result_release(struct user_result *r)
{
	free(r->json);
	r->json = NULL;
}
