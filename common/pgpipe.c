/* PostgreSQL connections in pipeline mode on an event loop, opened by a thread of their own. */
#include "pgpipe.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "clock.h"
#include "evloop.h"
#include "metrics.h"

#define MAX_CONNS 64
#define MAX_GROUP 8		/* statements in one transaction (pgpipe.h) */

/* Where a statement is in its answer: its result, the end of its results (NULL), its Sync. */
enum { WAIT_RESULT, WAIT_END, WAIT_SYNC };

struct slot {
	struct pgpipe *p;
	PGconn *c;		/* NULL: free */
	int fd;
	struct pgpipe_query *head, *tail;	/* in flight, in the order sent */
	struct pgpipe_query *held, *held_tail;	/* answered, waiting for their group's Sync */
	int inflight;			/* sent and not handed out: both lists */
	int unsynced;			/* sent since the last Sync: the open group */
	bool writing;		/* EPOLLOUT watched: libpq holds unsent output */
};

struct pgpipe {
	struct evloop *loop;
	int nconns;
	long holdoff_ms;
	pgpipe_connect_fn connect;
	void *connect_arg;
	struct slot slots[MAX_CONNS];	/* the loop's thread only */
	struct pgpipe_query *failed, *failed_tail;	/* answered with their why at the next tick */
	struct pgpipe_query *waiting, *waiting_tail;	/* for a connection on its way */
	bool stopping;			/* the loop's thread only */
	/* Shared with the opener thread, under lock. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t opener;
	bool opener_started;
	bool closing;
	int open;			/* connections in slots */
	PGconn *ready[MAX_CONNS];	/* opened, not yet in a slot */
	int nready;
	char last_error[256];
	atomic_int connected;
	atomic_bool down;		/* the last attempt to open a connection failed */
	/* pg_pipeline_transactions_total, pg_pipeline_statements_total{sent=grouped|alone|again} */
	struct metrics_series *transactions, *grouped, *alone, *again;
};

static void query_params_free(struct pgpipe_query *q);
static void route(struct pgpipe *p, struct pgpipe_query *q);

static void
queue_push(struct pgpipe_query **head, struct pgpipe_query **tail, struct pgpipe_query *q)
{
	q->next = NULL;
	if (*tail != NULL)
		(*tail)->next = q;
	else
		*head = q;
	*tail = q;
}

static struct pgpipe_query *
queue_pop(struct pgpipe_query **head, struct pgpipe_query **tail)
{
	struct pgpipe_query *q = *head;

	if (q != NULL) {
		*head = q->next;
		if (*head == NULL)
			*tail = NULL;
		q->next = NULL;
	}
	return q;
}

/* Keeps a copy of a statement's name and parameters in q, in one block; false when memory runs
 * out. */
static bool
query_params_keep(struct pgpipe_query *q, const char *statement, int nparams,
    const char *const *params)
{
	size_t ptrs = (size_t)(nparams > 0 ? nparams : 1) * sizeof(char *);
	size_t len = strlen(statement) + 1;
	char *at;

	for (int i = 0; i < nparams; i++)
		if (params[i] != NULL)
			len += strlen(params[i]) + 1;
	if ((q->params = malloc(ptrs + len)) == NULL)
		return false;
	q->nparams = nparams;
	at = (char *)q->params + ptrs;
	len = strlen(statement) + 1;
	q->statement = memcpy(at, statement, len);
	at += len;
	for (int i = 0; i < nparams; i++) {
		q->params[i] = NULL;
		if (params[i] != NULL) {
			len = strlen(params[i]) + 1;
			q->params[i] = memcpy(at, params[i], len);
			at += len;
		}
	}
	return true;
}

static void
query_params_free(struct pgpipe_query *q)
{
	free(q->params);
	q->params = NULL;
	q->statement = NULL;
	q->nparams = 0;
}

/* Ends a statement without an answer: its callback hears err. */
static void
query_fail(struct pgpipe_query *q, const char *err)
{
	if (q->result != NULL) {
		PQclear(q->result);
		q->result = NULL;
	}
	query_params_free(q);
	q->done(q, NULL, err);
}

/* Fails q at the next tick, never before pgpipe_send() returns. */
static void
query_fail_later(struct pgpipe *p, struct pgpipe_query *q, const char *why)
{
	q->why = why;
	if (p->failed == NULL)
		evloop_wake(p->loop);
	queue_push(&p->failed, &p->failed_tail, q);
}

/* The opener: keeps nconns connections open or on their way, no sooner than holdoff_ms after a
 * failed attempt. */
static void *
opener_run(void *arg)
{
	struct pgpipe *p = arg;
	int64_t failed_at = 0;

	pthread_mutex_lock(&p->lock);
	while (!p->closing) {
		char err[256];
		PGconn *c;

		if (p->open + p->nready >= p->nconns) {
			pthread_cond_wait(&p->cond, &p->lock);
			continue;
		}
		if (failed_at != 0 && mono_ms() - failed_at < p->holdoff_ms) {
			struct timespec until;
			int64_t left = p->holdoff_ms - (mono_ms() - failed_at);

			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += left / 1000;
			until.tv_nsec += (left % 1000) * 1000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&p->cond, &p->lock, &until);
			continue;
		}
		pthread_mutex_unlock(&p->lock);
		err[0] = '\0';
		c = p->connect(p->connect_arg, err, sizeof(err));
		pthread_mutex_lock(&p->lock);
		if (c == NULL) {
			failed_at = mono_ms();
			snprintf(p->last_error, sizeof(p->last_error), "%s", err[0] ? err : "could not connect");
			if (!atomic_exchange(&p->down, true))
				evloop_wake(p->loop);	/* what waits for a connection fails now */
			continue;
		}
		failed_at = 0;
		p->last_error[0] = '\0';
		atomic_store(&p->down, false);
		if (p->closing) {
			PQfinish(c);
			break;
		}
		p->ready[p->nready++] = c;
		evloop_wake(p->loop);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* The connection of s is lost (or the pool stops): every statement in flight on it fails. */
static void
slot_drop(struct slot *s, const char *err)
{
	struct pgpipe *p = s->p;
	struct pgpipe_query *q;

	evloop_unwatch(p->loop, s->fd);
	PQfinish(s->c);
	s->c = NULL;
	s->inflight = 0;
	s->unsynced = 0;
	s->writing = false;
	pthread_mutex_lock(&p->lock);
	p->open--;
	atomic_fetch_sub(&p->connected, 1);
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	while ((q = queue_pop(&s->held, &s->held_tail)) != NULL)
		query_fail(q, err);
	while ((q = queue_pop(&s->head, &s->tail)) != NULL)
		query_fail(q, err);
}

/* libpq failed on s: the connection is lost, with libpq's reason. */
static void
slot_lost(struct slot *s)
{
	char err[256];

	snprintf(err, sizeof(err), "connection to PostgreSQL lost: %s", PQerrorMessage(s->c));
	slot_drop(s, err);
}

static void slot_io(void *arg, uint32_t events);

/* Watches for output space only while libpq holds unsent output. */
static void
slot_flush(struct slot *s)
{
	int rc = PQflush(s->c);

	if (rc < 0) {
		slot_lost(s);
		return;
	}
	if ((rc == 1) != s->writing) {
		s->writing = rc == 1;
		if (evloop_watch(s->p->loop, s->fd, EPOLLIN | (s->writing ? EPOLLOUT : 0U), slot_io, s) != 0)
			slot_drop(s, "could not watch the PostgreSQL connection");
	}
}

/* Ends the open group of s with a Sync: its statements become one transaction. false when the
 * connection is lost (s dropped). */
static bool
slot_sync(struct slot *s)
{
	if (s->unsynced == 0)
		return true;
	s->tail->last = true;
	s->unsynced = 0;
	metrics_add(s->p->transactions, 1);
	if (PQpipelineSync(s->c) != 1) {
		slot_lost(s);
		return false;
	}
	slot_flush(s);
	return s->c != NULL;
}

/* Sends q (its statement kept in it) on s, in the open group, or alone in a transaction of its
 * own. */
static void
slot_send(struct slot *s, struct pgpipe_query *q, bool alone)
{
	q->result = NULL;
	q->state = WAIT_RESULT;
	q->last = false;
	if (s->c == NULL || (alone && !slot_sync(s))) {
		query_fail_later(s->p, q, "connection to PostgreSQL lost");
		return;
	}
	queue_push(&s->head, &s->tail, q);
	s->inflight++;
	if (PQsendQueryPrepared(s->c, q->statement, q->nparams, (const char *const *)q->params, NULL,
	    NULL, 0) != 1) {
		slot_lost(s);
		return;
	}
	metrics_add(!alone ? s->p->grouped : q->alone ? s->p->alone : s->p->again, 1);
	if (++s->unsynced >= MAX_GROUP || alone)
		(void)slot_sync(s);
}

/* A group's Sync arrived: hands out each statement's answer, in the order sent, or, when one of
 * them failed and so none committed, sends each again alone. */
static void
group_ended(struct slot *s, struct pgpipe_query *group)
{
	struct pgpipe_query *q;
	bool failed = false, alone = group->next == NULL;

	for (q = group; q != NULL; q = q->next) {
		ExecStatusType st = PQresultStatus(q->result);

		if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED)
			failed = true;
	}
	while ((q = group) != NULL) {
		PGresult *r = q->result;

		group = q->next;
		q->next = NULL;
		s->inflight--;
		if (failed && !alone) {
			PQclear(r);
			slot_send(s, q, true);
			continue;
		}
		q->result = NULL;
		query_params_free(q);
		q->done(q, r, NULL);
		PQclear(r);
	}
}

/* Reads every whole answer that arrived, in the order the statements were sent. */
static void
slot_read(struct slot *s)
{
	while (s->c != NULL && s->head != NULL && !PQisBusy(s->c)) {
		struct pgpipe_query *q = s->head, *group;
		PGresult *r = PQgetResult(s->c);

		switch (q->state) {
		case WAIT_RESULT:
			if (r == NULL)		/* no result at all: should not happen; wait for input */
				return;
			q->result = r;
			q->state = WAIT_END;
			break;
		case WAIT_END:
			if (r != NULL) {
				PQclear(r);	/* a second result of one statement: not ours to have */
				break;
			}
			if (q->last) {
				q->state = WAIT_SYNC;
				break;
			}
			(void)queue_pop(&s->head, &s->tail);
			queue_push(&s->held, &s->held_tail, q);
			break;
		case WAIT_SYNC:
			if (r == NULL)
				break;
			if (PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
				PQclear(r);
				break;
			}
			PQclear(r);
			(void)queue_pop(&s->head, &s->tail);
			queue_push(&s->held, &s->held_tail, q);
			group = s->held;
			s->held = s->held_tail = NULL;
			group_ended(s, group);
			break;
		}
	}
}

static void
slot_io(void *arg, uint32_t events)
{
	struct slot *s = arg;

	if (s->c == NULL)
		return;
	if ((events & EPOLLOUT) != 0) {
		slot_flush(s);
		if (s->c == NULL)
			return;
	}
	if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) {
		if (!PQconsumeInput(s->c) || PQstatus(s->c) == CONNECTION_BAD) {
			slot_lost(s);
			return;
		}
		slot_read(s);
	}
}

/* Puts the connections the opener made into free slots. */
static void
adopt_ready(struct pgpipe *p)
{
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < p->nconns && p->nready > 0; i++) {
		struct slot *s = &p->slots[i];
		PGconn *c;

		if (s->c != NULL)
			continue;
		c = p->ready[--p->nready];
		if (PQsetnonblocking(c, 1) != 0 || PQenterPipelineMode(c) != 1 ||
		    evloop_watch(p->loop, PQsocket(c), EPOLLIN, slot_io, s) != 0) {
			PQfinish(c);
			pthread_cond_signal(&p->cond);
			continue;
		}
		s->c = c;
		s->fd = PQsocket(c);
		p->open++;
		atomic_fetch_add(&p->connected, 1);
	}
	pthread_mutex_unlock(&p->lock);
}

static long
pool_tick(void *arg)
{
	struct pgpipe *p = arg;
	struct pgpipe_query *q, *failed = p->failed;

	adopt_ready(p);
	if (p->waiting != NULL && (atomic_load(&p->connected) > 0 || atomic_load(&p->down) ||
	    p->stopping)) {
		struct pgpipe_query *w = p->waiting, *next;

		p->waiting = p->waiting_tail = NULL;
		for (; w != NULL; w = next) {
			next = w->next;
			route(p, w);
		}
		failed = p->failed;
	}
	p->failed = p->failed_tail = NULL;
	while ((q = failed) != NULL) {
		failed = q->next;
		q->next = NULL;
		query_fail(q, p->stopping ? "shutting down" : q->why);
	}
	for (int i = 0; i < p->nconns; i++)
		if (p->slots[i].c != NULL && p->slots[i].writing)
			slot_flush(&p->slots[i]);
	return p->failed != NULL ? 0 : -1;
}

/* Before the loop waits: each connection's open group goes, with its Sync. */
static void
pool_idle(void *arg)
{
	struct pgpipe *p = arg;

	for (int i = 0; i < p->nconns; i++)
		if (p->slots[i].c != NULL && p->slots[i].unsynced > 0)
			(void)slot_sync(&p->slots[i]);
}

/* The loop stops: nothing more is sent, and everything in flight fails. */
static void
pool_stopped(void *arg)
{
	struct pgpipe *p = arg;

	p->stopping = true;
	for (int i = 0; i < p->nconns; i++)
		if (p->slots[i].c != NULL)
			slot_drop(&p->slots[i], "shutting down");
	while (p->failed != NULL || p->waiting != NULL)
		(void)pool_tick(p);
}

/* Sends q on the connection that has this round's open group (a statement that may join one), else
 * on the one with the fewest statements in flight; or keeps it for a connection on its way, or
 * fails it at the next tick. */
static void
route(struct pgpipe *p, struct pgpipe_query *q)
{
	struct slot *best = NULL;

	q->next = NULL;
	for (int i = 0; !p->stopping && i < p->nconns; i++) {
		struct slot *s = &p->slots[i];

		if (s->c == NULL)
			continue;
		if (s->unsynced > 0 && !q->alone) {	/* this round's group: one write, one commit */
			best = s;
			break;
		}
		if (best == NULL || s->inflight < best->inflight)
			best = s;
	}
	if (best != NULL)
		slot_send(best, q, q->alone);
	else if (!p->stopping && !atomic_load(&p->down))
		/* A connection is on its way (at start, or after one was lost): wait for it, or for
		 * the attempt to fail. */
		queue_push(&p->waiting, &p->waiting_tail, q);
	else
		query_fail_later(p, q, "PostgreSQL is unreachable");
}

void
pgpipe_send(struct pgpipe *p, struct pgpipe_query *q, const char *statement, int nparams,
    const char *const *params, bool alone)
{
	q->result = NULL;		/* what query_fail() would clear */
	q->alone = alone;
	if (!query_params_keep(q, statement, nparams, params)) {
		query_fail_later(p, q, "out of memory");
		return;
	}
	route(p, q);
}

int
pgpipe_connected(struct pgpipe *p, char *last_error, size_t errlen)
{
	pthread_mutex_lock(&p->lock);
	snprintf(last_error, errlen, "%s", p->last_error);
	pthread_mutex_unlock(&p->lock);
	return atomic_load(&p->connected);
}

static struct metrics_series *
pipeline_statements(const char *sent)
{
	return metrics_counter("pg_pipeline_statements_total", "Statements sent on the pipelined "
	    "PostgreSQL connections: in a group, alone (they lock rows), or again alone after another "
	    "statement of their group failed", "sent", sent, NULL);
}

struct pgpipe *
pgpipe_new(struct evloop *loop, int nconns, long holdoff_ms, pgpipe_connect_fn connect,
    void *connect_arg, char *err, size_t errlen)
{
	struct pgpipe *p;
	int rc;

	if (nconns < 1 || nconns > MAX_CONNS) {
		snprintf(err, errlen, "a pool holds 1 to %d connections", MAX_CONNS);
		return NULL;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->loop = loop;
	p->nconns = nconns;
	p->holdoff_ms = holdoff_ms;
	p->connect = connect;
	p->connect_arg = connect_arg;
	for (int i = 0; i < MAX_CONNS; i++)
		p->slots[i].p = p;
	p->transactions = metrics_counter("pg_pipeline_transactions_total",
	    "Transactions on the pipelined PostgreSQL connections: groups of statements, one Sync each",
	    NULL);
	p->grouped = pipeline_statements("grouped");
	p->alone = pipeline_statements("alone");
	p->again = pipeline_statements("again");
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	snprintf(p->last_error, sizeof(p->last_error), "not connected yet");
	evloop_on_tick(loop, pool_tick, p);
	evloop_on_idle(loop, pool_idle, p);
	evloop_on_stop(loop, pool_stopped, p);
	if ((rc = pthread_create(&p->opener, NULL, opener_run, p)) != 0) {
		snprintf(err, errlen, "could not start the thread that opens PostgreSQL connections: %s",
		    strerror(rc));
		pthread_cond_destroy(&p->cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return NULL;
	}
	(void)pthread_setname_np(p->opener, "pg-opener");
	p->opener_started = true;
	return p;
}

void
pgpipe_free(struct pgpipe *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->closing = true;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (p->opener_started)
		pthread_join(p->opener, NULL);
	for (int i = 0; i < p->nconns; i++)
		if (p->slots[i].c != NULL)
			PQfinish(p->slots[i].c);
	for (int i = 0; i < p->nready; i++)
		PQfinish(p->ready[i]);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
