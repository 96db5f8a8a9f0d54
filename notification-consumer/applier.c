/* Pulls events in stream order, applies each user's versions in order (an event that would skip
 * one waits for it, up to CONSUMER_GAP_WAIT), dead-letters poison, and holds the batch in hand
 * (not burning deliveries) while MongoDB is down. */
#include "applier.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "failpoint.h"
#include "jetstream.h"
#include "log.h"
#include "metrics.h"
#include "natsconn.h"
#include "util.h"

/* A poison event that could not be dead-lettered comes back after this delay, to be tried again. */
#define DEAD_LETTER_RETRY_MS 1000

/* An applied event kept for a while: FerretDB's update reads then writes, so another writer on
 * the same user (a replay) can take the document back to an older version right after. */
struct recent {
	struct event ev;	/* owned copy */
	int64_t published_us;
	uint64_t seq;
	int64_t at_ms;
};

/* A message held back because a version of its user before its own is missing: when this process
 * first held it back, and how often. Its wait counts from that first time, not from the stream's
 * timestamp: a consumer that lags finds every event older than CONSUMER_GAP_WAIT, and would then
 * apply an early one at once. */
struct held {
	uint64_t seq;
	int64_t first_ms, last_ms;
	int times;
};

struct applier {
	natsConnection *nc;
	struct store *store;
	struct lease *lease;
	const struct consumer_settings *cfg;
	jsCtx *js;
	struct js_pull *pull;
	pthread_t thread;
	bool started;

	atomic_bool mongo_ok;
	atomic_bool consumer_ok;
	bool prepared;
	pthread_mutex_t lock;		/* guards the two texts below */
	char consumer_err[256];
	char mongo_err[256];

	struct recent *recent;		/* apply thread only; oldest first */
	size_t nrecent, caprecent;
	int64_t last_recheck;

	struct held *held;		/* apply thread only; unordered */
	size_t nheld, capheld;

	uint64_t term;			/* apply thread only: lease_term() at the last write */

	pthread_mutex_t wait_lock;	/* guards applied and wakes readers */
	pthread_cond_t wait_cond;
	uint64_t applied;

	struct metrics_series *m_applied, *m_stale, *m_dead, *m_errors, *m_pending, *m_ack_pending,
	    *m_commit_latency, *m_publish_latency, *m_regressions, *m_held_back, *m_gaps;

	applier_copy_at_fn copy_at;	/* told of each version the copy reached; may be NULL */
	void *copy_at_arg;
};

static void
set_text(struct applier *a, char *dst, const char *text)
{
	pthread_mutex_lock(&a->lock);
	snprintf(dst, 256, "%s", text);
	pthread_mutex_unlock(&a->lock);
}

struct applier *
applier_new(natsConnection *nc, struct store *store, struct lease *lease,
    const struct consumer_settings *cfg, char *err, size_t errlen)
{
	struct applier *a = calloc(1, sizeof(*a));
	pthread_condattr_t ca;
	jsOptions jo;
	natsStatus s;

	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->nc = nc;
	a->store = store;
	a->lease = lease;
	a->cfg = cfg;
	jsOptions_Init(&jo);
	jo.Wait = cfg->nats_timeout_ms;
	s = natsConnection_JetStream(&a->js, nc, &jo);
	if (s != NATS_OK) {
		snprintf(err, errlen, "could not open a JetStream context: %s", natsStatus_GetText(s));
		free(a);
		return NULL;
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->wait_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->wait_cond, &ca);
	pthread_condattr_destroy(&ca);
	snprintf(a->consumer_err, sizeof(a->consumer_err), "not checked yet");
	snprintf(a->mongo_err, sizeof(a->mongo_err), "not checked yet");

	a->m_applied = metrics_counter("consumer_events_applied_total",
	    "Events that moved the copy to a new version", NULL);
	a->m_stale = metrics_counter("consumer_events_stale_total",
	    "Events acknowledged without effect: the copy was already at or past their version", NULL);
	a->m_dead = metrics_counter("consumer_events_dead_lettered_total",
	    "Poison events published to the dead-letter stream and terminated", NULL);
	a->m_errors = metrics_counter("consumer_apply_errors_total",
	    "Attempts to apply an event that MongoDB did not confirm", NULL);
	a->m_regressions = metrics_counter("consumer_regressions_repaired_total",
	    "Users another writer took back to an older version, applied again", NULL);
	a->m_held_back = metrics_counter("consumer_events_held_back_total",
	    "Times an event was handed back for later because a version of its user before its own "
	    "was missing", NULL);
	a->m_gaps = metrics_counter("consumer_version_gaps_total",
	    "Events applied over missing versions of their user after waiting CONSUMER_GAP_WAIT", NULL);
	a->m_pending = metrics_gauge("consumer_pending_messages",
	    "Messages in the stream not yet delivered to the consumer", NULL);
	a->m_ack_pending = metrics_gauge("consumer_ack_pending_messages",
	    "Messages delivered to the consumer and not yet acknowledged", NULL);
	a->m_commit_latency = metrics_histogram("consumer_commit_to_apply_seconds",
	    "Time from the outbox commit (occurred_at) to the apply in MongoDB", NULL,
	    metrics_latency_bounds, metrics_latency_nbounds);
	a->m_publish_latency = metrics_histogram("consumer_publish_to_apply_seconds",
	    "Time from the stream's timestamp to the apply in MongoDB", NULL,
	    metrics_latency_bounds, metrics_latency_nbounds);
	return a;
}

int
applier_decode(natsMsg *m, struct event *ev, char *err, size_t errlen)
{
	return event_parse(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), natsMsg_GetSubject(m),
	    ev, err, errlen);
}

static void
notify_applied(struct applier *a)
{
	pthread_mutex_lock(&a->wait_lock);
	a->applied++;
	pthread_cond_broadcast(&a->wait_cond);
	pthread_mutex_unlock(&a->wait_lock);
}

void
applier_wait_applied(struct applier *a, long ms)
{
	struct timespec ts;
	uint64_t seen;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&a->wait_lock);
	seen = a->applied;
	while (a->applied == seen) {
		if (pthread_cond_timedwait(&a->wait_cond, &a->wait_lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&a->wait_lock);
}

void
applier_on_copy_at(struct applier *a, applier_copy_at_fn fn, void *arg)
{
	a->copy_at = fn;
	a->copy_at_arg = arg;
}

bool
applier_ready(void *arg, json_t **out)
{
	struct applier *a = arg;
	bool nats = natsconn_ok(a->nc);
	bool mongo = atomic_load(&a->mongo_ok);
	bool consumer = atomic_load(&a->consumer_ok);
	json_t *checks = json_object();
	char role[448];

	/* A stand-by is ready: it serves reads, and takes over when the lease lapses. */
	if (lease_held(a->lease))
		snprintf(role, sizeof(role), "ok");
	else
		lease_describe(a->lease, role, sizeof(role));
	pthread_mutex_lock(&a->lock);
	json_object_set_new(checks, "nats", json_string(nats ? "ok" : "not connected"));
	json_object_set_new(checks, "mongodb", json_string(mongo ? "ok" : a->mongo_err));
	json_object_set_new(checks, "consumer", json_string(consumer ? role : a->consumer_err));
	pthread_mutex_unlock(&a->lock);
	*out = checks;
	return nats && mongo && consumer;
}

/* True while this process may write to the copy: it holds the lease. For tests only, the
 * failpoint consumer.apply_without_lease (FAILPOINTS="consumer.apply_without_lease=on") lets a
 * process write without holding it, as if there were no lease, so a test can show that two
 * writers are caught; the lease itself keeps running as always. */
static bool
may_apply(struct applier *a)
{
	return lease_held(a->lease) || FAILPOINT("consumer.apply_without_lease") != 0;
}

/* One store_apply() (see store.h). Called only after may_apply() said yes. When this process has
 * taken the lease anew since its last write, another process held it meanwhile and may have
 * written the copy, maybe a document whose history entry it never wrote (stopped between the
 * two, killed or paused past the lease): the store's memory of users whose history is complete
 * is dropped, so each user's next write here checks it (and repairs it) first. */
static enum copy_store_result
apply_once(struct applier *a, const struct event *ev, enum copy_store_order order,
    int64_t published_us, uint64_t seq, int64_t *copy_version, char *err, size_t errlen)
{
	uint64_t term = lease_term(a->lease);

	if (term != a->term) {
		store_forget_verified(a->store);
		a->term = term;
	}
	return store_apply(a->store, ev, order, published_us, seq, copy_version, err, errlen);
}

/* Pings MongoDB (and prepares the indexes once); updates the readiness. */
static bool
mongo_check(struct applier *a)
{
	char err[256];

	if (store_ping(a->store, err, sizeof(err)) != 0 ||
	    (!a->prepared && store_prepare(a->store, err, sizeof(err)) != 0)) {
		if (atomic_exchange(&a->mongo_ok, false) || strcmp(a->mongo_err, err) != 0)
			log_warnx("mongodb: %s", err);
		set_text(a, a->mongo_err, err);
		return false;
	}
	a->prepared = true;
	if (!atomic_exchange(&a->mongo_ok, true))
		log_info("mongodb: reachable");
	return true;
}

static bool
consumer_check(struct applier *a)
{
	struct js_durable_config dc = {
		.stream = a->cfg->stream,
		.name = a->cfg->durable,
		.ack_wait_ms = a->cfg->ack_wait_ms,
		.max_ack_pending = a->cfg->max_ack_pending,
	};
	char err[256];

	if (js_durable_ensure(a->js, &dc, err, sizeof(err)) != 0 ||
	    js_dlq_ensure(a->js, a->cfg->dlq_stream, a->cfg->dlq_prefix, err, sizeof(err)) != 0) {
		if (strcmp(a->consumer_err, err) != 0)
			log_warnx("jetstream: %s; retrying", err);
		set_text(a, a->consumer_err, err);
		return false;
	}
	if (a->pull == NULL) {
		a->pull = js_pull_new(a->nc, a->cfg->stream, a->cfg->durable, err, sizeof(err));
		if (a->pull == NULL) {
			log_warnx("jetstream: %s", err);
			set_text(a, a->consumer_err, err);
			return false;
		}
	}
	log_info("jetstream: consumer %s on %s in place, dead letters to %s", a->cfg->durable,
	    a->cfg->stream, a->cfg->dlq_stream);
	atomic_store(&a->consumer_ok, true);
	return true;
}

static void
lag_update(struct applier *a)
{
	uint64_t pending;
	int64_t ack_pending;
	char err[256];

	switch (js_consumer_lag(a->js, a->cfg->stream, a->cfg->durable, &pending, &ack_pending, err,
	    sizeof(err))) {
	case JS_OK:
		break;
	case JS_CONSUMER_GONE:
		/* Deleted under us: set it up again before the next fetch. */
		log_warnx("jetstream: %s", err);
		atomic_store(&a->consumer_ok, false);
		set_text(a, a->consumer_err, err);
		return;
	case JS_FAILED:
		log_debug("jetstream: %s", err);
		return;
	}
	metrics_set(a->m_pending, (double)pending);
	metrics_set(a->m_ack_pending, (double)ack_pending);
}

static void
dead_letter(struct applier *a, natsMsg *m, const struct js_meta *meta, const char *reason)
{
	char err[512];

	if (js_dlq_publish(a->js, m, a->cfg->dlq_prefix, a->cfg->stream, meta, reason,
	    a->cfg->nats_timeout_ms, err, sizeof(err)) != 0) {
		/* Not lost: it comes back after the delay and is tried again. */
		log_warnx("poison seq=%" PRIu64 " kept: %s", meta->stream_seq, err);
		js_nak(a->nc, m, DEAD_LETTER_RETRY_MS);
		return;
	}
	if (js_term_sync(a->nc, m, a->cfg->nats_timeout_ms, err, sizeof(err)) != 0)
		log_warnx("poison seq=%" PRIu64 ": %s", meta->stream_seq, err);
	metrics_add(a->m_dead, 1);
	log_warnx("dead-lettered seq=%" PRIu64 " subject=\"%s\": %s", meta->stream_seq,
	    natsMsg_GetSubject(m), reason);
}

/* Applies one event until MongoDB confirms, keeping the rest of the batch (msgs from index next
 * on) alive meanwhile, and stores what it did in *r (never COPY_STORE_ERROR). Returns false when
 * shutdown or the loss of the lease interrupted it first. */
static bool
apply_until_confirmed(struct applier *a, const struct event *ev, const struct js_meta *meta,
    enum copy_store_order order, int64_t *copy_version, natsMsg **msgs, int next, int n,
    enum copy_store_result *r)
{
	struct backoff b;
	char err[512];

	backoff_init(&b, a->cfg->backoff_min_ms, a->cfg->backoff_max_ms);
	for (;;) {
		*r = apply_once(a, ev, order, meta->timestamp_ns / 1000, meta->stream_seq,
		    copy_version, err, sizeof(err));
		if (*r != COPY_STORE_ERROR) {
			if (!atomic_load(&a->mongo_ok))
				mongo_check(a);
			return true;
		}
		metrics_add(a->m_errors, 1);
		if (atomic_exchange(&a->mongo_ok, false))
			log_warnx("%s; holding the batch until MongoDB answers event=%s", err, ev->event_id);
		set_text(a, a->mongo_err, err);
		/* Held messages must not be redelivered meanwhile (each redelivery counts): keep
		 * them in progress while waiting until MongoDB answers a ping again. */
		do {
			for (int i = next; i < n; i++)
				js_in_progress(a->nc, msgs[i]);
			if (shutdown_sleep_ms(backoff_next(&b)) || !may_apply(a))
				return false;
		} while (!mongo_check(a));
	}
}

static void
recent_add(struct applier *a, const struct event *ev, const struct js_meta *meta)
{
	struct recent *r;

	if (a->nrecent == a->caprecent) {
		size_t cap = a->caprecent ? a->caprecent * 2 : 256;
		struct recent *bigger = realloc(a->recent, cap * sizeof(*bigger));

		if (bigger == NULL)
			return;
		a->recent = bigger;
		a->caprecent = cap;
	}
	r = &a->recent[a->nrecent];
	r->ev = *ev;
	r->ev.name = strdup(ev->name);
	r->ev.email = strdup(ev->email);
	if (r->ev.name == NULL || r->ev.email == NULL) {
		event_release(&r->ev);
		return;
	}
	r->published_us = meta->timestamp_ns / 1000;
	r->seq = meta->stream_seq;
	r->at_ms = mono_ms();
	a->nrecent++;
}

/* A while (CONSUMER_RECHECK_AFTER) after applying, reads the users back in one query and applies
 * again what another writer took back; the version guard keeps this harmless when nothing
 * happened. Only while this process holds the lease: without it, it writes nothing (the
 * entries wait until it holds the lease again). */
static void
recent_check(struct applier *a)
{
	int64_t now = mono_ms(), *ids, *versions;
	size_t k = 0;
	char err[512];

	if (now - a->last_recheck < a->cfg->recheck_ms || !may_apply(a))
		return;
	a->last_recheck = now;
	while (k < a->nrecent && a->recent[k].at_ms <= now - a->cfg->recheck_ms)
		k++;
	if (k == 0)
		return;
	ids = calloc(k, sizeof(*ids));
	versions = calloc(k, sizeof(*versions));
	if (ids == NULL || versions == NULL)
		goto out;
	for (size_t i = 0; i < k; i++)
		ids[i] = a->recent[i].ev.user_id;
	if (store_versions(a->store, ids, k, versions, err, sizeof(err)) != 0) {
		log_debug("%s", err);
		goto out;	/* kept for the next round */
	}
	for (size_t i = 0; i < k; i++) {
		struct recent *r = &a->recent[i];

		/* Over the gap: the versions between were applied before, the other writer only
		 * took the document back. */
		if (versions[i] < r->ev.version && may_apply(a) && apply_once(a, &r->ev,
		    COPY_STORE_OVER_GAP, r->published_us, r->seq, NULL, err, sizeof(err)) ==
		    COPY_STORE_APPLIED) {
			metrics_add(a->m_regressions, 1);
			log_warnx("user %" PRId64 " was taken back to version %" PRId64 " by another "
			    "writer; applied version %" PRId64 " again event=%s", r->ev.user_id, versions[i],
			    r->ev.version, r->ev.event_id);
		}
		event_release(&r->ev);
	}
	memmove(a->recent, a->recent + k, (a->nrecent - k) * sizeof(*a->recent));
	a->nrecent -= k;
out:
	free(ids);
	free(versions);
}

/* Notes that the message of stream sequence seq is held back once more; returns its entry, or
 * NULL when there is no memory for one. */
static struct held *
held_note(struct applier *a, uint64_t seq)
{
	int64_t now = mono_ms();
	struct held *h = NULL;

	for (size_t i = 0; i < a->nheld; i++)
		if (a->held[i].seq == seq)
			h = &a->held[i];
	if (h == NULL) {
		if (a->nheld == a->capheld) {
			size_t cap = a->capheld ? a->capheld * 2 : 64;
			struct held *bigger = realloc(a->held, cap * sizeof(*bigger));

			if (bigger == NULL)
				return NULL;
			a->held = bigger;
			a->capheld = cap;
		}
		h = &a->held[a->nheld++];
		*h = (struct held){ .seq = seq, .first_ms = now };
	}
	h->last_ms = now;
	h->times++;
	return h;
}

static void
held_forget(struct applier *a, uint64_t seq)
{
	for (size_t i = 0; i < a->nheld; i++)
		if (a->held[i].seq == seq) {
			a->held[i] = a->held[--a->nheld];
			return;
		}
}

/* Forgets messages that did not come back for a long while: another process took them, or they
 * were acknowledged elsewhere. Should one still come back, its wait starts again. */
static void
held_prune(struct applier *a)
{
	int64_t old = mono_ms() - a->cfg->gap_wait_ms - 60000;

	for (size_t i = 0; i < a->nheld;)
		if (a->held[i].last_ms < old)
			a->held[i] = a->held[--a->nheld];
		else
			i++;
}

/* When a message held back for the h->times-th time comes back, doubling from
 * CONSUMER_HOLD_DELAY_MIN up to CONSUMER_HOLD_DELAY_MAX: soon, for a version that is right behind
 * it in the stream, and less often while it waits for one that a crashed process held (that comes
 * back only after the ack wait); never after its wait (left_ms > 0) is over. */
static long
hold_delay_ms(const struct applier *a, const struct held *h, long left_ms)
{
	long delay = a->cfg->hold_delay_min_ms, max = a->cfg->hold_delay_max_ms;

	for (int i = 1; i < h->times && delay < max; i++)
		delay *= 2;
	if (delay > max)
		delay = max;
	return delay < left_ms ? delay : left_ms;
}

/* The event in m is early: a version of its user before its own has not taken effect. Until it
 * waited CONSUMER_GAP_WAIT the message is handed back with a delay (the events behind it, of other
 * users, go on) and true returned; after that false, with *waited_ms how long it waited: the
 * caller applies it over the gap. */
static bool
hold_back(struct applier *a, natsMsg *m, const struct event *ev, const struct js_meta *meta,
    int64_t copy_version, int64_t *waited_ms)
{
	struct held *h = held_note(a, meta->stream_seq);
	int64_t waited;
	long delay;

	*waited_ms = 0;
	/* Without memory to count its wait it could wait forever: bounded beats ordered. */
	if (h == NULL)
		return false;
	waited = *waited_ms = mono_ms() - h->first_ms;
	if (waited >= a->cfg->gap_wait_ms)
		return false;
	delay = hold_delay_ms(a, h, (long)(a->cfg->gap_wait_ms - waited));
	js_nak(a->nc, m, delay);
	metrics_add(a->m_held_back, 1);
	if (h->times == 1)
		log_info("held back %s user=%" PRId64 " version=%" PRId64 " seq=%" PRIu64 ": the copy is "
		    "at version %" PRId64 ", waiting for the versions between event=%s", ev->type,
		    ev->user_id, ev->version, meta->stream_seq, copy_version, ev->event_id);
	else
		log_debug("held back %s user=%" PRId64 " version=%" PRId64 " seq=%" PRIu64 " again "
		    "(%d times, %.1fs): the copy is at version %" PRId64 " event=%s", ev->type,
		    ev->user_id, ev->version, meta->stream_seq, h->times, (double)waited / 1000.0,
		    copy_version, ev->event_id);
	return true;
}

/* Handles msgs[i]; returns false when shutdown, a NATS loss or the loss of the lease
 * interrupted it. */
static bool
handle(struct applier *a, natsMsg **msgs, int i, int n)
{
	natsMsg *m = msgs[i];
	struct js_meta meta;
	struct event ev;
	enum copy_store_result r;
	int64_t copy_version = 0, waited_ms = 0;
	bool gap = false;
	char err[512];

	/* Another process may apply once the lease is gone: not one more write. */
	if (!may_apply(a))
		return false;
	if (!js_meta_parse(natsMsg_GetReply(m), &meta)) {
		log_warnx("message on \"%s\" without JetStream metadata ignored", natsMsg_GetSubject(m));
		return true;
	}
	FAILPOINT("consumer.after_fetch_before_apply");
	if (applier_decode(m, &ev, err, sizeof(err)) != 0) {
		dead_letter(a, m, &meta, err);
		return true;
	}
	if (!apply_until_confirmed(a, &ev, &meta, COPY_STORE_IN_ORDER, &copy_version, msgs, i, n, &r))
		goto interrupted;
	if (r == COPY_STORE_EARLY) {
		if (hold_back(a, m, &ev, &meta, copy_version, &waited_ms)) {
			event_release(&ev);
			return true;
		}
		/* Waited long enough: the missing versions are not coming (dead-lettered, purged,
		 * past the stream's retention). Applied over the gap, so the user is not stuck. */
		if (!apply_until_confirmed(a, &ev, &meta, COPY_STORE_OVER_GAP, NULL, msgs, i, n, &r))
			goto interrupted;
		gap = r == COPY_STORE_APPLIED;
	}
	held_forget(a, meta.stream_seq);
	if (r == COPY_STORE_APPLIED)
		notify_applied(a);	/* readers waiting for this version need not wait for the ack */
	/* Applied or stale, MongoDB confirmed that the copy is at this version or past it. */
	if (a->copy_at != NULL)
		a->copy_at(a->copy_at_arg, ev.user_id, ev.version);
	FAILPOINT("consumer.after_write_before_ack");
	if (js_ack_sync(a->nc, m, a->cfg->nats_timeout_ms, err, sizeof(err)) != 0) {
		log_warnx("%s; it will be redelivered and found stale event=%s", err, ev.event_id);
		/* Without NATS every further ack would wait its timeout: hand the batch back. */
		if (!natsconn_ok(a->nc))
			goto interrupted;
	}
	if (r == COPY_STORE_APPLIED) {
		double now = (double)wall_us();

		metrics_add(a->m_applied, 1);
		metrics_observe(a->m_commit_latency, (now - (double)ev.occurred_us) / 1e6);
		metrics_observe(a->m_publish_latency, (now - (double)meta.timestamp_ns / 1e3) / 1e6);
		log_info("applied %s user=%" PRId64 " version=%" PRId64 " seq=%" PRIu64 " event=%s",
		    ev.type, ev.user_id, ev.version, meta.stream_seq, ev.event_id);
		if (gap) {
			metrics_add(a->m_gaps, 1);
			log_warnx("version gap: user=%" PRId64 " version=%" PRId64 " applied over the copy's "
			    "version %" PRId64 " (0: no document) after waiting %.1fs for the versions "
			    "between seq=%" PRIu64 " event=%s", ev.user_id, ev.version, copy_version,
			    (double)waited_ms / 1000.0, meta.stream_seq, ev.event_id);
		}
		recent_add(a, &ev, &meta);
	} else {
		metrics_add(a->m_stale, 1);
		log_info("stale %s user=%" PRId64 " version=%" PRId64 " seq=%" PRIu64
		    " delivered=%" PRIu64 " event=%s", ev.type, ev.user_id, ev.version, meta.stream_seq,
		    meta.delivered, ev.event_id);
	}
	event_release(&ev);
	return true;
interrupted:
	event_release(&ev);
	return false;
}

static void *
applier_run(void *arg)
{
	struct applier *a = arg;
	natsMsg **msgs = calloc((size_t)a->cfg->batch, sizeof(*msgs));
	struct backoff b;
	int64_t last_lag = 0, last_ping = 0;
	char err[512];

	backoff_init(&b, a->cfg->backoff_min_ms, a->cfg->backoff_max_ms);
	while (msgs != NULL && !shutdown_requested()) {
		enum js_result fetched;
		int n, i;

		if (!natsconn_ok(a->nc)) {
			shutdown_sleep_ms(250);
			continue;
		}
		if (!atomic_load(&a->consumer_ok) && !consumer_check(a)) {
			shutdown_sleep_ms(backoff_next(&b));
			continue;
		}
		/* Never fetch while MongoDB does not answer: the messages would only wait in hand. */
		if (!atomic_load(&a->mongo_ok) || mono_ms() - last_ping >= a->cfg->ping_interval_ms) {
			last_ping = mono_ms();
			if (!mongo_check(a)) {
				shutdown_sleep_ms(backoff_next(&b));
				continue;
			}
		}
		/* A stand-by checks its dependencies too, so /readyz tells the truth. */
		if (!may_apply(a)) {
			shutdown_sleep_ms(250);
			continue;
		}
		if (mono_ms() - last_lag >= a->cfg->lag_interval_ms) {
			last_lag = mono_ms();
			lag_update(a);
		}
		fetched = js_pull_fetch(a->pull, msgs, (int)a->cfg->batch, a->cfg->fetch_expiry_ms, &n,
		    err, sizeof(err));
		if (fetched != JS_OK) {
			log_warnx("jetstream: %s", err);
			if (fetched == JS_CONSUMER_GONE) {
				atomic_store(&a->consumer_ok, false);
				set_text(a, a->consumer_err, err);
			}
			shutdown_sleep_ms(backoff_next(&b));
			continue;
		}
		backoff_reset(&b);
		for (i = 0; i < n; i++) {
			if (!handle(a, msgs, i, n))
				break;
			natsMsg_Destroy(msgs[i]);
			msgs[i] = NULL;
		}
		/* Interrupted: hand the rest back at once (the nak of an applied one only brings it back
		 * as stale). */
		for (; i < n; i++) {
			js_nak(a->nc, msgs[i], 0);
			natsMsg_Destroy(msgs[i]);
			msgs[i] = NULL;
		}
		if (atomic_load(&a->mongo_ok))
			recent_check(a);
		held_prune(a);
	}
	free(msgs);
	if (natsconn_ok(a->nc))
		natsConnection_FlushTimeout(a->nc, 1000);
	return NULL;
}

int
applier_start(struct applier *a, char *err, size_t errlen)
{
	int e = pthread_create(&a->thread, NULL, applier_run, a);

	if (e != 0) {
		snprintf(err, errlen, "could not start the apply thread: %s", strerror(e));
		return -1;
	}
	a->started = true;
	return 0;
}

void
applier_join(struct applier *a)
{
	if (a->started)
		pthread_join(a->thread, NULL);
	a->started = false;
}

void
applier_free(struct applier *a)
{
	if (a == NULL)
		return;
	applier_join(a);
	for (size_t i = 0; i < a->nrecent; i++)
		event_release(&a->recent[i].ev);
	free(a->recent);
	free(a->held);
	js_pull_free(a->pull);
	jsCtx_Destroy(a->js);
	pthread_mutex_destroy(&a->lock);
	pthread_mutex_destroy(&a->wait_lock);
	pthread_cond_destroy(&a->wait_cond);
	free(a);
}
