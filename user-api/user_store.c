/* The users table and its outbox on a pool of pipelined PostgreSQL connections (common/pgpipe.h).
 * Each write is one statement whose data-modifying CTEs insert or change the user row and insert
 * its outbox row, so both commit together or not at all, in one round trip. The UPDATE (or
 * DELETE) takes the row lock before the outbox INSERT draws its id, so one user's events get ids
 * in version order. A call that needs a second statement (an idempotency key to look up, a miss
 * to explain) sends it when the first one's answer is in. */
#include "user_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_contract.h"
#include "log.h"
#include "random.h"
#include "shutdown.h"

struct user_store {
	struct user_store_config config;
	char ttl[24];		/* idempotency_ttl_ms in seconds, as the create statement takes it */
	struct pgpipe *pool;
	PGconn *sweep_conn;	/* the key sweep's, blocking, on the main thread */
	char last_open_error[512];	/* of pool_open(), on the pool's opener thread */
};

struct statement {
	const char *name;
	const char *sql;
	int nparams;
	bool alone;		/* locks existing rows: never in a group (common/pgpipe.h) */
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
		") SELECT u.id, u.version, " USER_JSON "::text FROM u", 9, true },
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
		") SELECT u.id FROM u", 7, true },
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
		"DELETE FROM idempotency_keys WHERE key = $1::text AND expires_at <= clock_timestamp()", 1,
		true },
	[ST_KEYS_EXPIRE] = { "idempotency_expire",
		"DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys"
		"  WHERE expires_at <= clock_timestamp() LIMIT $1::bigint)", 1 },
};


static void
fmt_i64(char *buf, size_t n, int64_t v)
{
	snprintf(buf, n, "%lld", (long long)v);
}

/* Copies NUL-terminated src into dst (n bytes), cut to fit; what snprintf("%s") does, without
 * its format parsing on the request path. */
static void
copy_text(char *dst, size_t n, const char *src)
{
	size_t len = strnlen(src, n - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* Opens a connection with every statement prepared: the pool's opener thread, and the sweep. */
static PGconn *
store_open(void *arg, char *err, size_t errlen)
{
	struct user_store *s = arg;
	PGconn *c = pg_connect(&s->config.pg, "user-api", err, errlen);

	if (c == NULL)
		return NULL;
	for (size_t i = 0; i < ST_COUNT; i++) {
		PGresult *r = PQprepare(c, statements[i].name, statements[i].sql,
		    statements[i].nparams, NULL);

		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			char msg[512];

			pg_error_text(c, r, msg, sizeof(msg));
			snprintf(err, errlen, "could not prepare %s: %s", statements[i].name, msg);
			PQclear(r);
			PQfinish(c);
			return NULL;
		}
		PQclear(r);
	}
	log_debug("user store connected");
	return c;
}

/* store_open() for the pool's opener thread, which retries every hold-off while PostgreSQL is
 * away: each new reason is logged once, not every attempt, and the return once. */
static PGconn *
pool_open(void *arg, char *err, size_t errlen)
{
	struct user_store *s = arg;
	PGconn *c = store_open(s, err, errlen);

	if (c == NULL) {
		if (strcmp(err, s->last_open_error) != 0) {
			log_warnx("%s", err);
			snprintf(s->last_open_error, sizeof(s->last_open_error), "%s", err);
		}
		return NULL;
	}
	if (s->last_open_error[0] != '\0') {
		log_info("PostgreSQL answers again");
		s->last_open_error[0] = '\0';
	}
	return c;
}

struct user_store *
user_store_new(struct evloop *loop, const struct user_store_config *config, char *err,
    size_t errlen)
{
	struct user_store *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->config = *config;
	fmt_i64(s->ttl, sizeof(s->ttl), config->idempotency_ttl_ms / 1000);
	s->pool = pgpipe_new(loop, (int)config->connections, config->reconnect_holdoff_ms, pool_open,
	    s, err, errlen);
	if (s->pool == NULL) {
		free(s);
		return NULL;
	}
	return s;
}

void
user_store_free(struct user_store *s)
{
	if (s == NULL)
		return;
	pgpipe_free(s->pool);
	if (s->sweep_conn != NULL)
		PQfinish(s->sweep_conn);
	free(s);
}

bool
user_store_ready(struct user_store *s, char *err, size_t errlen)
{
	char last[256];

	if (pgpipe_connected(s->pool, last, sizeof(last)) > 0)
		return true;
	snprintf(err, errlen, "%s", last);
	return false;
}

/* --- one call: statements in turn, each answer read as it comes ---------------------------------- */

/* What each step of a call waits for. */
enum step { STEP_KEY_GET, STEP_KEY_DROP, STEP_CREATE, STEP_KEY_RECHECK, STEP_UPDATE, STEP_DELETE,
	STEP_VERSION, STEP_FIND, STEP_LIST };


static void call_result(struct pgpipe_query *q, PGresult *r, const char *err);

static void
call_send(struct user_store_call *c, enum step step, int st, const char *const *params)
{
	c->step = step;
	c->statement = st;
	c->q.done = call_result;
	pgpipe_send(c->s->pool, &c->q, statements[st].name, statements[st].nparams, params,
	    statements[st].alone);
}

static void
call_end(struct user_store_call *c, enum user_store_result rc)
{
	c->rc = rc;
	if (rc == USER_STORE_OK)
		c->err[0] = '\0';
	c->done(c);
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

/* Reads the (id, version, json) row every user statement returns. */
static enum user_store_result
take_user(PGresult *r, struct user_result *out, char *err, size_t errlen)
{
	out->id = field_i64(r, 0, 0);
	out->version = field_i64(r, 0, 1);
	return field_dup(r, 0, 2, &out->json, err, errlen);
}

/* A statement that failed: err filled, the SQLSTATE's meaning returned, constraint (64 bytes)
 * given the constraint's name when there is one. */
static enum user_store_result
statement_error(const char *name, PGresult *r, const char *lost, char *constraint, char *err,
    size_t errlen, char sqlstate[6])
{
	const char *state, *cons;
	char msg[512];

	sqlstate[0] = '\0';
	if (r == NULL) {
		snprintf(err, errlen, "%s failed: %s", name, lost);
		return USER_STORE_UNAVAILABLE;
	}
	state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	cons = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
	pg_error_text(NULL, r, msg, sizeof(msg));
	snprintf(err, errlen, "%s failed: %s", name, msg);
	if (state != NULL)
		snprintf(sqlstate, 6, "%s", state);
	if (constraint != NULL)
		snprintf(constraint, 64, "%s", cons ? cons : "");
	if (state == NULL)
		return USER_STORE_ERROR;
	/* The connection is going (class 08, admin shutdown), or a statement timeout, lock
	 * timeout, too many connections, a serialization failure or deadlock: transient. */
	if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
	    strcmp(state, "57014") == 0 || strcmp(state, "55P03") == 0 || strcmp(state, "53300") == 0 ||
	    strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
		return USER_STORE_UNAVAILABLE;
	return USER_STORE_ERROR;
}

static void
send_create(struct user_store_call *c)
{
	char event_id[37];
	const char *params[9] = { c->in.name, c->in.email, event_id, c->traceparent,
		c->has_key ? c->key : NULL, c->s->ttl, EVENT_TYPE_CREATED, EVENT_SUBJECT_CREATED,
		EVENT_SCHEMA_VERSION_TEXT };

	uuid_new(event_id);
	call_send(c, STEP_CREATE, ST_CREATE, params);
}

static void
send_key_get(struct user_store_call *c, enum step step)
{
	const char *params[3] = { c->key, c->in.name, c->in.email };

	call_send(c, step, ST_KEY_GET, params);
}

static void
send_version(struct user_store_call *c)
{
	char idbuf[24];
	const char *params[1] = { idbuf };

	fmt_i64(idbuf, sizeof(idbuf), c->id);
	call_send(c, STEP_VERSION, ST_VERSION, params);
}

/* The answer of an idempotency key lookup: true when the call ended (a replay, or the key reused
 * with another body); false when the key is unknown or expired (*expired says which). */
static bool
key_answer(struct user_store_call *c, PGresult *r, bool *expired)
{
	*expired = false;
	if (PQntuples(r) == 0)
		return false;
	if (strcmp(PQgetvalue(r, 0, 4), "t") != 0) {
		*expired = true;
		return false;
	}
	if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
		call_end(c, USER_STORE_KEY_REUSED);
		return true;
	}
	c->res.status = (unsigned)field_i64(r, 0, 1);
	c->res.id = field_i64(r, 0, 3);
	call_end(c, field_dup(r, 0, 2, &c->res.json, c->err, sizeof(c->err)));
	return true;
}

/* After a create lost to a unique index: whose key or which email it was. */
static void
create_conflict(struct user_store_call *c)
{
	if (strcmp(c->constraint, "users_email_lower_key") != 0) {
		call_end(c, USER_STORE_ERROR);
		return;
	}
	snprintf(c->err, sizeof(c->err), "a user with email \"%s\" already exists", c->in.email);
	call_end(c, USER_STORE_EMAIL_TAKEN);
}

static void
call_result(struct pgpipe_query *q, PGresult *r, const char *lost)
{
	struct user_store_call *c = (struct user_store_call *)((char *)q -
	    offsetof(struct user_store_call, q));
	ExecStatusType status = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	char sqlstate[6];
	enum user_store_result rc;
	bool expired;

	if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
		rc = statement_error(statements[c->statement].name, r, lost, c->constraint, c->err,
		    sizeof(c->err), sqlstate);
		if (rc == USER_STORE_ERROR && strcmp(sqlstate, "23505") == 0) {
			if (c->step == STEP_CREATE && c->has_key) {
				/* A concurrent request with the same key may have won the race: replay
				 * its answer. */
				send_key_get(c, STEP_KEY_RECHECK);
				return;
			}
			if (c->step == STEP_CREATE) {
				create_conflict(c);
				return;
			}
			if (c->step == STEP_UPDATE) {
				snprintf(c->err, sizeof(c->err), "a user with email \"%s\" already exists",
				    c->in.email);
				rc = USER_STORE_EMAIL_TAKEN;
			}
		}
		call_end(c, rc);
		return;
	}
	switch ((enum step)c->step) {
	case STEP_KEY_GET:
		if (key_answer(c, r, &expired))
			return;
		if (expired) {
			const char *params[1] = { c->key };

			call_send(c, STEP_KEY_DROP, ST_KEY_DROP, params);
			return;
		}
		send_create(c);
		return;
	case STEP_KEY_DROP:
		send_create(c);
		return;
	case STEP_KEY_RECHECK:
		if (!key_answer(c, r, &expired))
			create_conflict(c);
		return;
	case STEP_CREATE:
	case STEP_FIND:
	case STEP_UPDATE:
		if (PQntuples(r) == 0) {
			if (c->step == STEP_UPDATE) {
				send_version(c);	/* the update matched no row: why? */
			} else if (c->step == STEP_FIND) {
				snprintf(c->err, sizeof(c->err), "user %lld does not exist", (long long)c->id);
				call_end(c, USER_STORE_NOT_FOUND);
			} else {
				snprintf(c->err, sizeof(c->err), "user_create returned no row");
				call_end(c, USER_STORE_ERROR);
			}
			return;
		}
		call_end(c, take_user(r, &c->res, c->err, sizeof(c->err)));
		return;
	case STEP_DELETE:
		if (PQntuples(r) == 0)
			send_version(c);
		else
			call_end(c, USER_STORE_OK);
		return;
	case STEP_VERSION:
		if (PQntuples(r) == 0) {
			snprintf(c->err, sizeof(c->err), "user %lld does not exist", (long long)c->id);
			call_end(c, USER_STORE_NOT_FOUND);
		} else {
			snprintf(c->err, sizeof(c->err), "user %lld is at version %s", (long long)c->id,
			    PQgetvalue(r, 0, 0));
			call_end(c, USER_STORE_STALE);
		}
		return;
	case STEP_LIST:
		c->res.fetched = field_i64(r, 0, 1);
		c->res.last_id = field_i64(r, 0, 2);
		call_end(c, field_dup(r, 0, 0, &c->res.json, c->err, sizeof(c->err)));
		return;
	}
}

/* Copies what a write carries into the call, which outlives the request's strings. */
static void
call_init(struct user_store *s, struct user_store_call *c, int64_t id, const struct user_input *in,
    const struct write_meta *m)
{
	void (*done)(struct user_store_call *) = c->done;
	void *arg = c->arg;

	memset(c, 0, offsetof(struct user_store_call, in));
	c->done = done;
	c->arg = arg;
	c->s = s;
	c->id = id;
	c->has_key = c->has_if_match = false;
	c->constraint[0] = '\0';
	if (in != NULL)
		c->in = *in;
	if (m != NULL) {
		copy_text(c->traceparent, sizeof(c->traceparent), m->traceparent);
		c->has_key = m->idempotency_key != NULL;
		if (c->has_key)
			copy_text(c->key, sizeof(c->key), m->idempotency_key);
		c->has_if_match = m->if_match != NULL;
		if (c->has_if_match)
			copy_text(c->if_match, sizeof(c->if_match), m->if_match);
	}
}

void
user_store_create(struct user_store *s, struct user_store_call *c, const struct user_input *in,
    const struct write_meta *m)
{
	call_init(s, c, 0, in, m);
	if (c->has_key)
		send_key_get(c, STEP_KEY_GET);
	else
		send_create(c);
}

void
user_store_update(struct user_store *s, struct user_store_call *c, int64_t id,
    const struct user_input *in, const struct write_meta *m)
{
	char idbuf[24], event_id[37];
	const char *params[9] = { idbuf, NULL, NULL, NULL, event_id, NULL, EVENT_TYPE_UPDATED,
		EVENT_SUBJECT_UPDATED, EVENT_SCHEMA_VERSION_TEXT };

	call_init(s, c, id, in, m);
	params[1] = c->in.name;
	params[2] = c->in.email;
	params[3] = c->has_if_match ? c->if_match : NULL;
	params[5] = c->traceparent;
	fmt_i64(idbuf, sizeof(idbuf), id);
	uuid_new(event_id);
	call_send(c, STEP_UPDATE, ST_UPDATE, params);
}

void
user_store_delete(struct user_store *s, struct user_store_call *c, int64_t id,
    const struct write_meta *m)
{
	char idbuf[24], event_id[37];
	const char *params[7] = { idbuf, NULL, event_id, NULL, EVENT_TYPE_DELETED,
		EVENT_SUBJECT_DELETED, EVENT_SCHEMA_VERSION_TEXT };

	call_init(s, c, id, NULL, m);
	params[1] = c->has_if_match ? c->if_match : NULL;
	params[3] = c->traceparent;
	fmt_i64(idbuf, sizeof(idbuf), id);
	uuid_new(event_id);
	call_send(c, STEP_DELETE, ST_DELETE, params);
}

void
user_store_find(struct user_store *s, struct user_store_call *c, int64_t id)
{
	char idbuf[24];
	const char *params[1] = { idbuf };

	call_init(s, c, id, NULL, NULL);
	fmt_i64(idbuf, sizeof(idbuf), id);
	call_send(c, STEP_FIND, ST_FIND, params);
}

void
user_store_list(struct user_store *s, struct user_store_call *c, int64_t after, long limit)
{
	char afterbuf[24], limitbuf[24];
	const char *params[2] = { afterbuf, limitbuf };

	call_init(s, c, 0, NULL, NULL);
	fmt_i64(afterbuf, sizeof(afterbuf), after);
	fmt_i64(limitbuf, sizeof(limitbuf), limit);
	call_send(c, STEP_LIST, ST_LIST, params);
}

/* --- the key sweep: blocking, on the main thread ------------------------------------------------- */

enum user_store_result
user_store_expire_keys(struct user_store *s, long *deleted, char *err, size_t errlen)
{
	char batchbuf[24];
	const char *params[1] = { batchbuf };
	long n;

	*deleted = 0;
	if (s->sweep_conn != NULL && PQstatus(s->sweep_conn) != CONNECTION_OK) {
		PQfinish(s->sweep_conn);
		s->sweep_conn = NULL;
	}
	if (s->sweep_conn == NULL && (s->sweep_conn = store_open(s, err, errlen)) == NULL)
		return USER_STORE_UNAVAILABLE;
	fmt_i64(batchbuf, sizeof(batchbuf), s->config.key_sweep_batch);
	do {
		PGresult *r = PQexecPrepared(s->sweep_conn, statements[ST_KEYS_EXPIRE].name, 1, params,
		    NULL, NULL, 0);
		char sqlstate[6];

		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			enum user_store_result rc = statement_error(statements[ST_KEYS_EXPIRE].name, r,
			    "no answer", NULL, err, errlen, sqlstate);

			if (r == NULL || pg_connection_lost(s->sweep_conn, r)) {
				PQfinish(s->sweep_conn);
				s->sweep_conn = NULL;
				rc = USER_STORE_UNAVAILABLE;
			}
			PQclear(r);
			return rc;
		}
		n = strtol(PQcmdTuples(r), NULL, 10);
		PQclear(r);
		*deleted += n;
	} while (n == s->config.key_sweep_batch && !shutdown_requested());
	return USER_STORE_OK;
}

void
user_result_release(struct user_result *r)
{
	free(r->json);
	r->json = NULL;
}
