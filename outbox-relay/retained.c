/* Kept published rows: the recorded stream state, restores, the bounded sweep and the gauges. */
#include "retained.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"

/* A published row's columns set back to "waiting": the claim (which reads only waiting rows, in
 * id order) publishes it again with its event id, in its place among the others. */
#define SET_WAITING "UPDATE outbox SET published_seq = NULL, published_at = NULL "

static const char load_sql[] =
    "SELECT s.created_ns, s.first_seq, s.high_seq, "
    "(SELECT max(published_seq) FROM outbox WHERE published_at IS NOT NULL) "
    "FROM (SELECT 1) one LEFT JOIN outbox_stream s ON s.stream = $1";

static const char kept_min_sql[] =
    "SELECT min(published_seq) FROM outbox "
    "WHERE published_at IS NOT NULL AND published_seq BETWEEN $1 AND $2";

static const char restore_all_sql[] = SET_WAITING "WHERE published_at IS NOT NULL";

static const char restore_above_sql[] = SET_WAITING
    "WHERE published_at IS NOT NULL AND published_seq > $1";

/* The kept rows below the stream's first sequence, less those a MaxAge ($2 ms; 0 for none) took
 * out by design: a row younger than the MaxAge by 5 s at least was in the stream for sure. */
#define BELOW_FIRST "WHERE published_at IS NOT NULL AND published_seq < $1 AND ($2::bigint = 0 OR " \
    "published_at > statement_timestamp() - make_interval(secs => $2::bigint / 1000.0) + " \
    "interval '5 s') "

/* How many, and how long until JetStream ($3 ms of duplicate window, 1 s to spare) no longer
 * drops the newest of them as a copy of the message it had before the purge. */
static const char below_wait_sql[] =
    "SELECT count(*), COALESCE(extract(epoch FROM max(published_at) + "
    "make_interval(secs => $3::bigint / 1000.0 + 1) - statement_timestamp()), 0) FROM outbox "
    BELOW_FIRST;

static const char restore_below_sql[] = SET_WAITING BELOW_FIRST;

static const char record_sql[] =
    "INSERT INTO outbox_stream (stream, created_ns, first_seq, high_seq, checked_at) "
    "VALUES ($1, $2, $3, $4, statement_timestamp()) ON CONFLICT (stream) DO UPDATE SET "
    "created_ns = EXCLUDED.created_ns, first_seq = EXCLUDED.first_seq, "
    "high_seq = EXCLUDED.high_seq, checked_at = EXCLUDED.checked_at";

/* Oldest first, through the index on published_at; LEAST with the last check's time keeps every
 * row the stream was not yet seen holding (no check recorded: nothing goes). */
static const char sweep_sql[] =
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < LEAST("
    "statement_timestamp() - make_interval(secs => $1::bigint / 1000.0), "
    "COALESCE((SELECT checked_at FROM outbox_stream WHERE stream = $2), '-infinity')) "
    "ORDER BY published_at LIMIT $3 FOR UPDATE SKIP LOCKED)";

static const char measure_sql[] =
    "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL), "
    "COALESCE(extract(epoch FROM clock_timestamp() - (SELECT created_at FROM outbox "
    "WHERE published_at IS NULL ORDER BY id LIMIT 1)), 0), "
    "(SELECT count(*) FROM outbox WHERE published_at IS NOT NULL), "
    "COALESCE(extract(epoch FROM clock_timestamp() - (SELECT min(published_at) FROM outbox "
    "WHERE published_at IS NOT NULL)), 0)";

/* Runs one statement; returns its result when it has the wanted status, else NULL with err
 * filled as "<what>: <why>". */
static PGresult *
run(PGconn *c, const char *sql, int n, const char *const *params, ExecStatusType want,
    const char *what, char *err, size_t errlen)
{
	PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
	char msg[256];

	if (PQresultStatus(r) == want)
		return r;
	pg_error_text(c, r, msg, sizeof(msg));
	snprintf(err, errlen, "%s: %s", what, msg);
	PQclear(r);
	return NULL;
}

/* The rows an UPDATE or DELETE touched, or -1 (err filled). */
static long
run_count(PGconn *c, const char *sql, int n, const char *const *params, const char *what,
    char *err, size_t errlen)
{
	PGresult *r = run(c, sql, n, params, PGRES_COMMAND_OK, what, err, errlen);
	long count;

	if (r == NULL)
		return -1;
	count = strtol(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return count;
}

static uint64_t
get_u64(const PGresult *r, int col)
{
	return PQgetisnull(r, 0, col) ? 0 : strtoull(PQgetvalue(r, 0, col), NULL, 10);
}

int
retained_load(PGconn *c, const char *stream, struct retained_view *out, char *err, size_t errlen)
{
	const char *params[1] = { stream };
	PGresult *r;

	memset(out, 0, sizeof(*out));
	r = run(c, load_sql, 1, params, PGRES_TUPLES_OK, "could not read the recorded stream state",
	    err, errlen);
	if (r == NULL)
		return -1;
	out->recorded = !PQgetisnull(r, 0, 0);
	if (out->recorded) {
		out->created_ns = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		out->first_seq = get_u64(r, 1);
		out->high_seq = get_u64(r, 2);
	}
	out->kept_max = get_u64(r, 3);
	PQclear(r);
	return 0;
}

/* The part of retained_apply() inside its transaction. */
static int
apply(PGconn *c, const char *stream, const struct watch_verdict *v, const struct watch_seen *s,
    long duplicate_window_ms, long max_age_ms, struct retained_restore *out, char *err,
    size_t errlen)
{
	char a[24], b[24], w[24], created[24], first[24], high[24];
	const char *p[4];
	PGresult *r;
	long n;

	if (v->lost_first > 0) {
		snprintf(a, sizeof(a), "%" PRIu64, v->lost_first);
		snprintf(b, sizeof(b), "%" PRIu64, v->lost_last);
		p[0] = a;
		p[1] = b;
		if ((r = run(c, kept_min_sql, 2, p, PGRES_TUPLES_OK, "could not read the kept rows",
		    err, errlen)) == NULL)
			return -1;
		out->kept_min = get_u64(r, 0);
		PQclear(r);
	}
	if (v->restore_all) {
		if ((n = run_count(c, restore_all_sql, 0, NULL, "could not restore the kept rows", err,
		    errlen)) < 0)
			return -1;
		out->restored += n;
	}
	if (v->restore_above) {
		snprintf(a, sizeof(a), "%" PRIu64, v->above);
		p[0] = a;
		if ((n = run_count(c, restore_above_sql, 1, p, "could not restore the kept rows", err,
		    errlen)) < 0)
			return -1;
		out->restored += n;
	}
	if (!v->restore_all && v->below > 1) {
		snprintf(a, sizeof(a), "%" PRIu64, v->below);
		snprintf(b, sizeof(b), "%ld", max_age_ms);
		snprintf(w, sizeof(w), "%ld", duplicate_window_ms);
		p[0] = a;
		p[1] = b;
		p[2] = w;
		if ((r = run(c, below_wait_sql, 3, p, PGRES_TUPLES_OK, "could not read the kept rows",
		    err, errlen)) == NULL)
			return -1;
		n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
		out->held_s = strtod(PQgetvalue(r, 0, 1), NULL);
		PQclear(r);
		if (n > 0 && out->held_s > 0) {
			out->held = n;
		} else if (n > 0) {
			out->held_s = 0;
			if ((n = run_count(c, restore_below_sql, 2, p, "could not restore the kept rows",
			    err, errlen)) < 0)
				return -1;
			out->restored += n;
		}
	}
	snprintf(created, sizeof(created), "%" PRId64, s->created_ns);
	snprintf(first, sizeof(first), "%" PRIu64, s->first_seq);
	snprintf(high, sizeof(high), "%" PRIu64, v->high_seq);
	p[0] = stream;
	p[1] = created;
	p[2] = first;
	p[3] = high;
	return run_count(c, record_sql, 4, p, "could not record the stream state", err, errlen) < 0 ?
	    -1 : 0;
}

int
retained_apply(PGconn *c, const char *stream, const struct watch_verdict *v,
    const struct watch_seen *s, long duplicate_window_ms, long max_age_ms,
    struct retained_restore *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (run_count(c, "BEGIN", 0, NULL, "could not check the kept rows", err, errlen) < 0)
		return -1;
	if (apply(c, stream, v, s, duplicate_window_ms, max_age_ms, out, err, errlen) != 0 ||
	    run_count(c, "COMMIT", 0, NULL, "could not record the stream check", err, errlen) < 0) {
		if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
			PQclear(PQexec(c, "ROLLBACK"));
		memset(out, 0, sizeof(*out));
		return -1;
	}
	return 0;
}

long
retained_sweep(PGconn *c, const char *stream, long retain_ms, long limit, char *err,
    size_t errlen)
{
	char retain[24], n[24];
	const char *p[3] = { retain, stream, n };

	snprintf(retain, sizeof(retain), "%ld", retain_ms);
	snprintf(n, sizeof(n), "%ld", limit);
	return run_count(c, sweep_sql, 3, p, "could not sweep published outbox rows", err, errlen);
}

int
retained_measure(PGconn *c, struct outbox_gauges *g, char *err, size_t errlen)
{
	PGresult *r = run(c, measure_sql, 0, NULL, PGRES_TUPLES_OK,
	    "could not measure the outbox backlog", err, errlen);

	if (r == NULL)
		return -1;
	g->waiting = strtod(PQgetvalue(r, 0, 0), NULL);
	g->waiting_age_s = strtod(PQgetvalue(r, 0, 1), NULL);
	g->kept = strtod(PQgetvalue(r, 0, 2), NULL);
	g->kept_age_s = strtod(PQgetvalue(r, 0, 3), NULL);
	PQclear(r);
	return 0;
}
