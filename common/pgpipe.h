/* PostgreSQL connections in pipeline mode on an event loop (common/evloop.h): statements of many
 * requests in flight at once on a few connections, without a thread that waits for each.
 * Connections are opened (and their statements prepared) by a thread of the pool's own, so that
 * a PostgreSQL that does not answer never stalls the loop.
 *
 * Group commit: the statements sent on one connection in one round of the loop (at most 8) share
 * one transaction and reach PostgreSQL in one write, followed by one Sync. Each caller still sees
 * its own statement's outcome only: answers are handed out after the Sync, when all of them are
 * committed, and when any statement of the group fails (a constraint, a deadlock), none of them
 * committed and each is sent again alone, as its own transaction. A statement must therefore not
 * depend on being alone in its transaction (use clock_timestamp(), not now()). A statement that
 * locks rows other transactions may hold (an UPDATE or DELETE of existing rows) is sent alone:
 * two groups that each hold one such lock and wait for the other's would deadlock, and
 * PostgreSQL sees that only after deadlock_timeout (a second by default). Inserts and reads do
 * not wait on each other that way (only on the same unique key, inserted by both at once). */
#ifndef COMMON_PGPIPE_H
#define COMMON_PGPIPE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

struct evloop;
struct pgpipe;
struct pgpipe_query;

/* How a statement ended, on the loop's thread. r is its result (the pool PQclear()s it after the
 * call returns): PGRES_TUPLES_OK, PGRES_COMMAND_OK or PGRES_FATAL_ERROR with its SQLSTATE. r is
 * NULL when the statement never ran to an answer: no connection, or the connection was lost
 * (then the statement may or may not have committed); err says which. The callback may send the
 * next statement of the same caller. */
typedef void (*pgpipe_result_fn)(struct pgpipe_query *q, PGresult *r, const char *err);

/* One statement in flight; the caller embeds it in its own state and keeps it alive until the
 * callback ran. */
struct pgpipe_query {
	pgpipe_result_fn done;
	/* the pool's */
	struct pgpipe_query *next;
	PGresult *result;
	int state;
	bool last;		/* the last statement of its transaction: a Sync follows it */
	bool alone;		/* in a transaction of its own */
	char *statement, **params;	/* a copy (one block), to send it again or later */
	int nparams;
	const char *why;	/* why it fails, in the list of those answered at the next tick */
};

/* Opens one connection, ready for the statements its callers send (prepared), on the pool's
 * thread; NULL with err filled when it cannot. */
typedef PGconn *(*pgpipe_connect_fn)(void *arg, char *err, size_t errlen);

/* A pool of up to nconns connections on loop; they are opened at once and again whenever one
 * is lost, no sooner than holdoff_ms after a failed attempt. Starts the pool's thread; NULL
 * with err filled on failure. Call before evloop_start(): its stop function fails what is still
 * in flight. */
struct pgpipe *pgpipe_new(struct evloop *loop, int nconns, long holdoff_ms,
    pgpipe_connect_fn connect, void *connect_arg, char *err, size_t errlen);
/* Ends the pool's thread and closes every connection; the loop has stopped. */
void pgpipe_free(struct pgpipe *p);

/* Sends a prepared statement (text parameters, copied) on the connection that has this round's
 * group, else the one with the fewest statements in flight: in that group, or alone in a
 * transaction of its own (above); q->done is called later on the loop's thread, never before
 * this returns. Without an open connection the statement waits for one while one
 * is being opened (at start, after a loss), and fails at once when the last attempt failed
 * (PostgreSQL is away: the caller answers at once). The loop's thread only. */
void pgpipe_send(struct pgpipe *p, struct pgpipe_query *q, const char *statement, int nparams,
    const char *const *params, bool alone);

/* Connections open now, and the reason of the last failed attempt to open one ("" when the last
 * attempt succeeded). Any thread. */
int pgpipe_connected(struct pgpipe *p, char *last_error, size_t errlen);

#endif
