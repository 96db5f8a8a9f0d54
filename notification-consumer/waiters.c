/* The registry of reads waiting for a version: a hash of user ids to their waiters, woken by the
 * apply path, and one thread that sleeps until the nearest deadline or the next recheck. */
#include "waiters.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"

struct waiter {
	int64_t user_id, min_version, deadline_ms;
	struct waiter *next;			/* in its bucket */
	struct waiter *prev_all, *next_all;	/* in the list of all */
	bool linked;				/* false once woken or left */
	enum wait_outcome woke;			/* why, when woken before it was suspended */
	struct http_request *req;		/* set once suspended */
	enum wait_outcome *outcome;		/* the request's, written before the resume */
};

struct waiters {
	struct store *store;
	struct lease *lease;
	long max, recheck_ms;

	pthread_mutex_t lock;		/* guards everything below but the scratch arrays */
	pthread_cond_t cond;		/* wakes the thread: a new deadline, close, stop */
	pthread_t thread;
	bool started, closed, stopping;
	atomic_long count;		/* waiters linked; written under lock, read without it too */
	struct waiter **buckets;	/* by hash of the user id */
	size_t mask;
	struct waiter *all;
	int64_t next_recheck_ms;
	int64_t wake_at_ms;		/* when the thread wakes next; INT64_MAX: when told */

	int64_t *ids, *versions;	/* the thread's scratch for a recheck, max each */

	struct metrics_series *m_waiters, *m_refused;
};

static size_t
bucket_of(const struct waiters *w, int64_t user_id)
{
	return (size_t)(((uint64_t)user_id * 0x9e3779b97f4a7c15ULL) >> 20) & w->mask;
}

struct waiters *
waiters_new(struct store *store, struct lease *lease, long max, long recheck_ms, char *err,
    size_t errlen)
{
	struct waiters *w = calloc(1, sizeof(*w));
	pthread_condattr_t ca;
	size_t n = 16;

	/* At most half full, so a bucket holds about one user. */
	while (n < (size_t)max * 2)
		n *= 2;
	if (w == NULL || (w->buckets = calloc(n, sizeof(*w->buckets))) == NULL ||
	    (w->ids = calloc((size_t)max, sizeof(*w->ids))) == NULL ||
	    (w->versions = calloc((size_t)max, sizeof(*w->versions))) == NULL) {
		snprintf(err, errlen, "out of memory for %ld waiting reads", max);
		if (w != NULL) {
			free(w->buckets);
			free(w->ids);
			free(w->versions);
		}
		free(w);
		return NULL;
	}
	w->store = store;
	w->lease = lease;
	w->max = max;
	w->recheck_ms = recheck_ms;
	w->mask = n - 1;
	w->wake_at_ms = INT64_MAX;
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	w->m_waiters = metrics_gauge("consumer_read_waiters",
	    "Reads with min_version waiting for their version, suspended", NULL);
	w->m_refused = metrics_counter("consumer_read_waits_refused_total",
	    "Reads with min_version answered 503 because CONSUMER_MAX_WAITERS reads were waiting", NULL);
	metrics_set(w->m_waiters, 0);
	return w;
}

/* Takes wt out of the registry; lock held. */
static void
unlink_waiter(struct waiters *w, struct waiter *wt)
{
	struct waiter **p = &w->buckets[bucket_of(w, wt->user_id)];

	while (*p != wt)
		p = &(*p)->next;
	*p = wt->next;
	if (wt->prev_all != NULL)
		wt->prev_all->next_all = wt->next_all;
	else
		w->all = wt->next_all;
	if (wt->next_all != NULL)
		wt->next_all->prev_all = wt->prev_all;
	wt->linked = false;
	atomic_fetch_sub(&w->count, 1);
	metrics_set(w->m_waiters, (double)atomic_load(&w->count));
}

/* Wakes wt: a suspended one is resumed and freed here; one not suspended yet is left to the
 * handler that holds it (waiters_suspend() then returns false). Lock held, which orders the resume
 * after the suspend. */
static void
wake(struct waiters *w, struct waiter *wt, enum wait_outcome why)
{
	struct http_request *req = wt->req;

	unlink_waiter(w, wt);
	if (req == NULL) {
		wt->woke = why;
		return;
	}
	*wt->outcome = why;
	free(wt);
	http_resume(req);
}

/* Wakes the waiters of user_id whose version the copy has reached; lock held. */
static void
wake_reached(struct waiters *w, int64_t user_id, int64_t version)
{
	struct waiter *wt = w->buckets[bucket_of(w, user_id)], *next;

	for (; wt != NULL; wt = next) {
		next = wt->next;
		if (wt->user_id == user_id && wt->min_version <= version)
			wake(w, wt, WAIT_REACHED);
	}
}

struct waiter *
waiters_enter(struct waiters *w, int64_t user_id, int64_t min_version, int64_t deadline_ms,
    enum wait_refusal *why)
{
	struct waiter *wt;
	size_t b;

	pthread_mutex_lock(&w->lock);
	if (w->closed) {
		*why = WAIT_CLOSED;
		goto refused;
	}
	if (atomic_load(&w->count) >= w->max || (wt = calloc(1, sizeof(*wt))) == NULL) {
		*why = WAIT_FULL;
		metrics_add(w->m_refused, 1);
		goto refused;
	}
	wt->user_id = user_id;
	wt->min_version = min_version;
	wt->deadline_ms = deadline_ms;
	wt->linked = true;
	b = bucket_of(w, user_id);
	wt->next = w->buckets[b];
	w->buckets[b] = wt;
	wt->next_all = w->all;
	if (w->all != NULL)
		w->all->prev_all = wt;
	w->all = wt;
	/* The first waiter starts the rechecks' clock. */
	if (atomic_fetch_add(&w->count, 1) == 0)
		w->next_recheck_ms = mono_ms() + w->recheck_ms;
	metrics_set(w->m_waiters, (double)atomic_load(&w->count));
	/* The thread sleeps until the nearest deadline it knows: tell it of a nearer one. */
	if (deadline_ms < w->wake_at_ms || w->next_recheck_ms < w->wake_at_ms)
		pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return wt;
refused:
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

void
waiters_leave(struct waiters *w, struct waiter *wt)
{
	pthread_mutex_lock(&w->lock);
	if (wt->linked)
		unlink_waiter(w, wt);
	pthread_mutex_unlock(&w->lock);
	free(wt);
}

bool
waiters_suspend(struct waiters *w, struct waiter *wt, struct http_request *req,
    http_handler_fn resumed, enum wait_outcome *outcome)
{
	pthread_mutex_lock(&w->lock);
	if (!wt->linked) {
		*outcome = wt->woke;
		pthread_mutex_unlock(&w->lock);
		free(wt);
		return false;
	}
	wt->req = req;
	wt->outcome = outcome;
	/* Under the lock: a wake-up, which resumes, cannot come before the suspend. */
	http_suspend(req, resumed);
	pthread_mutex_unlock(&w->lock);
	return true;
}

void
waiters_copy_at(struct waiters *w, int64_t user_id, int64_t version)
{
	/* Nobody waits, as almost always: no lock. A read that enters right after this still reads
	 * the copy after entering, and sees this version there. */
	if (atomic_load(&w->count) == 0)
		return;
	pthread_mutex_lock(&w->lock);
	wake_reached(w, user_id, version);
	pthread_mutex_unlock(&w->lock);
}

void
waiters_copy_at_fn(void *arg, int64_t user_id, int64_t version)
{
	waiters_copy_at(arg, user_id, version);
}

static int
cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Reads the versions of every user waited for in one query (outside the lock) and wakes those
 * reached: how a stand-by, which applies nothing, learns of the leader's writes. Lock held on
 * entry and on return. */
static void
recheck(struct waiters *w)
{
	size_t n = 0, k = 0;
	char err[512];
	int rc;

	for (struct waiter *wt = w->all; wt != NULL && n < (size_t)w->max; wt = wt->next_all)
		w->ids[n++] = wt->user_id;
	qsort(w->ids, n, sizeof(*w->ids), cmp_id);
	for (size_t i = 0; i < n; i++)
		if (k == 0 || w->ids[k - 1] != w->ids[i])
			w->ids[k++] = w->ids[i];
	pthread_mutex_unlock(&w->lock);
	rc = store_versions(w->store, w->ids, k, w->versions, err, sizeof(err));
	pthread_mutex_lock(&w->lock);
	if (rc != 0) {
		/* The reads answer at their deadline; the next recheck may do better. */
		log_debug("waiting reads: %s", err);
		return;
	}
	for (size_t i = 0; i < k; i++)
		if (w->versions[i] > 0)
			wake_reached(w, w->ids[i], w->versions[i]);
}

static void *
waiters_run(void *arg)
{
	struct waiters *w = arg;

	pthread_mutex_lock(&w->lock);
	while (!w->stopping) {
		int64_t now = mono_ms(), next = INT64_MAX;
		struct waiter *wt, *after;
		struct timespec ts;

		for (wt = w->all; wt != NULL; wt = after) {
			after = wt->next_all;
			if (wt->deadline_ms <= now)
				wake(w, wt, WAIT_DEADLINE);
			else if (wt->deadline_ms < next)
				next = wt->deadline_ms;
		}
		if (atomic_load(&w->count) > 0) {
			if (now >= w->next_recheck_ms) {
				w->next_recheck_ms = now + w->recheck_ms;
				/* The lease holder is told of every version by its own apply path. */
				if (!lease_held(w->lease)) {
					recheck(w);
					continue;	/* time passed: deadlines first */
				}
			}
			if (w->next_recheck_ms < next)
				next = w->next_recheck_ms;
		}
		w->wake_at_ms = next;
		if (next == INT64_MAX) {
			pthread_cond_wait(&w->cond, &w->lock);
			continue;
		}
		/* From now on, on the clock the condition waits on. */
		ts = clock_after_ms(CLOCK_MONOTONIC, next - now);
		pthread_cond_timedwait(&w->cond, &w->lock, &ts);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int
waiters_start(struct waiters *w, char *err, size_t errlen)
{
	int e = pthread_create(&w->thread, NULL, waiters_run, w);

	if (e != 0) {
		snprintf(err, errlen, "could not start the thread of waiting reads: %s", strerror(e));
		return -1;
	}
	w->started = true;
	return 0;
}

void
waiters_close(struct waiters *w)
{
	long n;

	pthread_mutex_lock(&w->lock);
	w->closed = true;
	n = atomic_load(&w->count);
	while (w->all != NULL)
		wake(w, w->all, WAIT_SHUTDOWN);
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	if (n > 0)
		log_info("answering %ld waiting reads: shutting down", n);
}

void
waiters_free(struct waiters *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	if (w->started)
		pthread_join(w->thread, NULL);
	/* After waiters_close() the registry holds none: the woken ones that were not suspended
	 * yet belong to their handlers. */
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w->buckets);
	free(w->ids);
	free(w->versions);
	free(w);
}
