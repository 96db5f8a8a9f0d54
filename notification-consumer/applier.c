/* Pulls events in stream order and hands each to the lane of its user (CONSUMER_LANES threads,
 * by a hash of the user id), which applies a batch of them in bulk writes and each user's
 * versions in order (an event that would skip one waits for it, up to CONSUMER_GAP_WAIT),
 * dead-letters poison, and holds what it has in hand (not burning deliveries) while MongoDB does
 * not confirm. A poison event or a user whose writes fail holds up only its own lane. */
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
#include "traceparent.h"
#include "util.h"

/* A poison event that could not be dead-lettered comes back after this delay, to be tried again. */
#define DEAD_LETTER_RETRY_MS 1000
/* A message for a lane that has twice a batch waiting comes back after this delay: a lane held up
 * by its user does not hold up the others by filling the process's hands. */
#define LANE_FULL_DELAY_MS 1000

/* An applied event kept for a while: FerretDB's update reads then writes, so another writer on
 * the same user (a replay) can take the document back to an older version right after. */
struct recent {
	struct event ev;	/* owned copy */
	int64_t published_us;
	uint64_t seq;
	int64_t at_ms;		/* when it was applied, monotonic */
	int64_t at_us;		/* the same, wall clock */
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

/* One message in a lane's hands. */
struct item {
	natsMsg *m;		/* owned */
	struct js_meta meta;
	struct event ev;	/* decoded, unless poison */
	char *poison;		/* why it cannot be applied (owned), or NULL */
	bool alone;		/* goes through store_apply() on its own, not in a bulk */
	bool tried;		/* has been in a round */
	bool done;		/* settled: acknowledged, handed back for later, or dead-lettered */
};

struct applier;

/* A thread that applies the events of the users hashed to it, in the order it got them. */
struct lane {
	struct applier *a;
	int no;
	pthread_t thread;
	bool started;

	pthread_mutex_t lock;		/* guards the queue and stop */
	pthread_cond_t cond;
	struct item *queue;		/* a ring of qcap */
	size_t qhead, qlen, qcap;
	bool stop;

	/* The batch in hand and its bookkeeping, CONSUMER_BATCH each, made once at start. */
	struct item *items;
	struct copy_batch_item *bulk;
	size_t *round, *in_bulk;

	/* The lane's thread only. */
	struct recent *recent;		/* oldest first */
	size_t nrecent, caprecent;
	int64_t last_recheck;
	struct held *held;		/* unordered */
	size_t nheld, capheld;
	uint64_t term;			/* lease_term() at the lane's last write */
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
	pthread_mutex_t check_lock;	/* one mongo_check() at a time; guards prepared */
	bool prepared;
	pthread_mutex_t lock;		/* guards the two texts below */
	char consumer_err[256];
	char mongo_err[256];

	struct lane *lanes;
	int nlanes;
	atomic_long in_hand;		/* messages handed to lanes and not yet settled */
	pthread_mutex_t room_lock;	/* with room_cond: a lane settled some */
	pthread_cond_t room_cond;

	pthread_mutex_t wait_lock;	/* guards applied and wakes readers */
	pthread_cond_t wait_cond;
	uint64_t applied;

	struct metrics_series *m_applied, *m_stale, *m_dead, *m_errors, *m_pending, *m_ack_pending,
	    *m_commit_latency, *m_publish_latency, *m_regressions, *m_held_back, *m_gaps, *m_dlq;

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
	a->nlanes = (int)cfg->lanes;
	a->lanes = calloc((size_t)a->nlanes, sizeof(*a->lanes));
	if (a->lanes == NULL) {
		snprintf(err, errlen, "out of memory");
		jsCtx_Destroy(a->js);
		free(a);
		return NULL;
	}
	for (int i = 0; i < a->nlanes; i++) {
		struct lane *l = &a->lanes[i];

		l->a = a;
		l->no = i;
		l->qcap = (size_t)cfg->batch * 2;
		pthread_mutex_init(&l->lock, NULL);
		pthread_cond_init(&l->cond, NULL);
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->check_lock, NULL);
	pthread_mutex_init(&a->room_lock, NULL);
	pthread_cond_init(&a->room_cond, NULL);
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
	a->m_dlq = metrics_gauge("consumer_dlq_messages",
	    "Messages in the dead-letter stream (refreshed with the lag by the lease holder)", NULL);
	a->m_commit_latency = metrics_histogram("consumer_commit_to_apply_seconds",
	    "Time from the outbox commit (occurred_at) to the apply in MongoDB",
	    metrics_latency_bounds, metrics_latency_nbounds, NULL);
	a->m_publish_latency = metrics_histogram("consumer_publish_to_apply_seconds",
	    "Time from the stream's timestamp to the apply in MongoDB",
	    metrics_latency_bounds, metrics_latency_nbounds, NULL);
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
	struct timespec ts = clock_after_ms(CLOCK_MONOTONIC, ms);
	uint64_t seen;

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

/* When this process has taken the lease anew since the lane's last write, another process held
 * it meanwhile and may have written the copy, maybe a document whose history entry it never
 * wrote (stopped between the two, killed or paused past the lease): the store's memory of users
 * whose history is complete is dropped, so each user's next write here checks it (and repairs
 * it) first. Called before each write, only after may_apply() said yes. */
static void
lane_term_check(struct lane *l)
{
	uint64_t term = lease_term(l->a->lease);

	if (term != l->term) {
		store_forget_verified(l->a->store);
		l->term = term;
	}
}

/* For tests only: FAILPOINTS="consumer.refuse_user_<id>=on" makes every write of that user fail
 * as if MongoDB refused it while it answers everything else, to show that such a user holds up
 * its own lane only. */
static bool
user_refused(int64_t user_id)
{
	char name[64];

	if (!failpoints_armed)
		return false;
	snprintf(name, sizeof(name), "consumer.refuse_user_%lld", (long long)user_id);
	return failpoint_eval(name) != 0;
}

/* One store_apply() (see store.h). */
static enum copy_store_result
apply_once(struct lane *l, const struct event *ev, enum copy_store_order order,
    int64_t published_us, uint64_t seq, int64_t *copy_version, char *err, size_t errlen)
{
	lane_term_check(l);
	if (user_refused(ev->user_id)) {
		snprintf(err, errlen, "could not apply event %s: failpoint consumer.refuse_user_%lld",
		    ev->event_id, (long long)ev->user_id);
		return COPY_STORE_ERROR;
	}
	return store_apply(l->a->store, ev, order, published_us, seq, copy_version, err, errlen);
}

/* Pings MongoDB (and prepares the indexes once); updates the readiness. Any thread. */
static bool
mongo_check(struct applier *a)
{
	char err[256];
	bool changed, failed;

	pthread_mutex_lock(&a->check_lock);
	failed = store_ping(a->store, err, sizeof(err)) != 0 ||
	    (!a->prepared && store_prepare(a->store, err, sizeof(err)) != 0);
	if (!failed)
		a->prepared = true;
	pthread_mutex_unlock(&a->check_lock);
	if (failed) {
		pthread_mutex_lock(&a->lock);
		changed = atomic_exchange(&a->mongo_ok, false) || strncmp(a->mongo_err, err,
		    strlen(a->mongo_err)) != 0;
		error_headline(err, a->mongo_err, sizeof(a->mongo_err));
		pthread_mutex_unlock(&a->lock);
		if (changed)
			log_warnx("mongodb: %s", err);
		return false;
	}
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
	uint64_t pending, dlq;
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
	/* The dead-letter stream's depth: what waits for an operator, whatever this process's
	 * counter says (it starts at 0 with each process, and a purge empties the stream). */
	if (js_stream_msgs(a->js, a->cfg->dlq_stream, &dlq, err, sizeof(err)) != 0) {
		log_debug("jetstream: %s", err);
		return;
	}
	metrics_set(a->m_dlq, (double)dlq);
}

/* The trace id of m's traceparent header (the relay copies the one of the request that wrote
 * the event), when it is valid. */
static void
trace_scope(natsMsg *m)
{
	const char *tp = NULL;

	if (natsMsgHeader_Get(m, "traceparent", &tp) == NATS_OK && tp != NULL && traceparent_valid(tp))
		log_scope_set_n(LOG_ID_TRACE, tp + 3, 32);	/* "00-" and the trace id's 32 digits */
}

void
applier_log_scope(const struct event *ev, natsMsg *m)
{
	if (!log_scope_enabled())
		return;
	log_scope_clear();
	log_scope_set(LOG_ID_EVENT, ev->event_id);
	log_scope_set_int(LOG_ID_USER, ev->user_id);
	if (m != NULL)
		trace_scope(m);
}

/* The ids of a message in hand on the lines logged until log_scope_clear(): its event's, or for
 * poison, which has no event to go by, the Nats-Msg-Id the relay published it with (its event id,
 * unless the message did not come from the relay). */
static void
item_scope(const struct item *it)
{
	const char *id = NULL;

	if (!log_scope_enabled())
		return;
	if (it->poison == NULL) {
		applier_log_scope(&it->ev, it->m);
		return;
	}
	log_scope_clear();
	if (natsMsgHeader_Get(it->m, "Nats-Msg-Id", &id) == NATS_OK)
		log_scope_set(LOG_ID_EVENT, id);
	trace_scope(it->m);
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

/* Keeps the messages of a lane that are not settled yet alive while it waits (each redelivery
 * would count): those of the batch in hand from index next on, and those queued. */
static void
lane_in_progress(struct lane *l, struct item *items, size_t next, size_t n)
{
	for (size_t i = next; i < n; i++)
		if (!items[i].done)
			js_in_progress(l->a->nc, items[i].m);
	pthread_mutex_lock(&l->lock);
	for (size_t k = 0; k < l->qlen; k++)
		js_in_progress(l->a->nc, l->queue[(l->qhead + k) % l->qcap].m);
	pthread_mutex_unlock(&l->lock);
}

/* Applies one event until MongoDB confirms, keeping the lane's other messages alive meanwhile,
 * and stores what it did in *r (never COPY_STORE_ERROR). A write that fails while MongoDB answers
 * a ping is this user's problem, not the server's: the lane retries it with backoff and the
 * others go on (the process stays ready). A write that fails with MongoDB gone makes the process
 * not ready and stops the fetching until it answers again. Returns false when shutdown or the
 * loss of the lease interrupted it first. */
static bool
apply_until_confirmed(struct lane *l, struct item *it, enum copy_store_order order,
    int64_t *copy_version, struct item *items, size_t n, enum copy_store_result *r)
{
	struct applier *a = l->a;
	struct backoff b;
	bool told = false;
	char err[512];

	backoff_init(&b, a->cfg->backoff_min_ms, a->cfg->backoff_max_ms);
	for (;;) {
		*r = apply_once(l, &it->ev, order, it->meta.timestamp_ns / 1000, it->meta.stream_seq,
		    copy_version, err, sizeof(err));
		if (*r != COPY_STORE_ERROR) {
			if (!atomic_load(&a->mongo_ok))
				mongo_check(a);
			if (told)
				log_info("lane %d: event %s applied after its failures", l->no,
				    it->ev.event_id);
			return true;
		}
		metrics_add(a->m_errors, 1);
		if (!told)
			log_warnx("%s; retrying it, lane %d waits user=%" PRId64 " event=%s", err, l->no,
			    it->ev.user_id, it->ev.event_id);
		told = true;
		/* mongo_check() makes the process not ready, and logs why, when MongoDB is gone. */
		do {
			lane_in_progress(l, items, 0, n);
			if (shutdown_sleep_ms(backoff_next(&b)) || !may_apply(a))
				return false;
		} while (!mongo_check(a));
	}
}

static void
recent_add(struct lane *l, const struct event *ev, const struct js_meta *meta)
{
	struct recent *r;

	if (l->nrecent == l->caprecent) {
		size_t cap = l->caprecent ? l->caprecent * 2 : 256;
		struct recent *bigger = realloc(l->recent, cap * sizeof(*bigger));

		if (bigger == NULL)
			return;
		l->recent = bigger;
		l->caprecent = cap;
	}
	r = &l->recent[l->nrecent];
	r->ev = *ev;
	r->ev.name = ev->name != NULL ? strdup(ev->name) : NULL;
	r->ev.email = ev->email != NULL ? strdup(ev->email) : NULL;
	if ((r->ev.name == NULL) != (ev->name == NULL) || (r->ev.email == NULL) != (ev->email == NULL)) {
		event_release(&r->ev);
		return;
	}
	r->published_us = meta->timestamp_ns / 1000;
	r->seq = meta->stream_seq;
	r->at_ms = mono_ms();
	r->at_us = wall_us();
	l->nrecent++;
}

/* A while (CONSUMER_RECHECK_AFTER) after applying, reads the lane's users back in one query and
 * applies again what another writer took back; the version guard keeps this harmless when
 * nothing happened. Only the writes made before the end another writer (a replay) announced
 * are read back, and only while this process holds the lease: without it, it writes nothing (the
 * entries wait until it holds the lease again). Without another writer nothing is read: the
 * read asks for {_id: {$in: [...]}}, which FerretDB 1.24 answers by reading the whole
 * collection. A write is decided on WRITER_NOTICE_MS after CONSUMER_RECHECK_AFTER, so that an
 * announcement made just after it has been read by then. */
#define WRITER_NOTICE_MS 1500
static void
recent_check(struct lane *l)
{
	struct applier *a = l->a;
	int64_t now = mono_ms(), *ids = NULL, *versions = NULL;
	int64_t writer_until = lease_writer_until(a->lease);
	size_t k = 0, nids = 0;
	char err[512];

	if (now - l->last_recheck < a->cfg->recheck_ms || !may_apply(a))
		return;
	l->last_recheck = now;
	while (k < l->nrecent && l->recent[k].at_ms <= now - a->cfg->recheck_ms - WRITER_NOTICE_MS)
		k++;
	if (k == 0)
		return;
	for (size_t i = 0; i < k; i++)
		if (l->recent[i].at_us <= writer_until)
			nids++;
	if (nids > 0) {
		ids = calloc(nids, sizeof(*ids));
		versions = calloc(nids, sizeof(*versions));
		if (ids == NULL || versions == NULL)
			goto out;
		nids = 0;
		for (size_t i = 0; i < k; i++)
			if (l->recent[i].at_us <= writer_until)
				ids[nids++] = l->recent[i].ev.user_id;
		if (store_versions(a->store, ids, nids, versions, err, sizeof(err)) != 0) {
			log_debug("%s", err);
			goto out;	/* kept for the next round */
		}
	}
	for (size_t i = 0, j = 0; i < k; i++) {
		struct recent *r = &l->recent[i];
		int64_t version;

		if (r->at_us > writer_until) {
			event_release(&r->ev);
			continue;
		}
		version = versions[j++];
		/* Over the gap: the versions between were applied before, the other writer only
		 * took the document back. */
		if (version < r->ev.version && may_apply(a) && apply_once(l, &r->ev,
		    COPY_STORE_OVER_GAP, r->published_us, r->seq, NULL, err, sizeof(err)) ==
		    COPY_STORE_APPLIED) {
			metrics_add(a->m_regressions, 1);
			applier_log_scope(&r->ev, NULL);
			log_warnx("user %" PRId64 " was taken back to version %" PRId64 " by another "
			    "writer; applied version %" PRId64 " again event=%s", r->ev.user_id, version,
			    r->ev.version, r->ev.event_id);
			log_scope_clear();
		}
		event_release(&r->ev);
	}
	memmove(l->recent, l->recent + k, (l->nrecent - k) * sizeof(*l->recent));
	l->nrecent -= k;
out:
	free(ids);
	free(versions);
}

/* Notes that the message of stream sequence seq is held back once more; returns its entry, or
 * NULL when there is no memory for one. */
static struct held *
held_note(struct lane *l, uint64_t seq)
{
	int64_t now = mono_ms();
	struct held *h = NULL;

	for (size_t i = 0; i < l->nheld; i++)
		if (l->held[i].seq == seq)
			h = &l->held[i];
	if (h == NULL) {
		if (l->nheld == l->capheld) {
			size_t cap = l->capheld ? l->capheld * 2 : 64;
			struct held *bigger = realloc(l->held, cap * sizeof(*bigger));

			if (bigger == NULL)
				return NULL;
			l->held = bigger;
			l->capheld = cap;
		}
		h = &l->held[l->nheld++];
		*h = (struct held){ .seq = seq, .first_ms = now };
	}
	h->last_ms = now;
	h->times++;
	return h;
}

static void
held_forget(struct lane *l, uint64_t seq)
{
	for (size_t i = 0; i < l->nheld; i++)
		if (l->held[i].seq == seq) {
			l->held[i] = l->held[--l->nheld];
			return;
		}
}

/* Forgets messages that did not come back for a long while: another process took them, or they
 * were acknowledged elsewhere. Should one still come back, its wait starts again. */
static void
held_prune(struct lane *l)
{
	int64_t old = mono_ms() - l->a->cfg->gap_wait_ms - 60000;

	for (size_t i = 0; i < l->nheld;)
		if (l->held[i].last_ms < old)
			l->held[i] = l->held[--l->nheld];
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

/* The event of it is early: a version of its user before its own has not taken effect. Until it
 * waited CONSUMER_GAP_WAIT the message is handed back with a delay (the events behind it, of other
 * users, go on) and true returned; after that false, with *waited_ms how long it waited: the
 * caller applies it over the gap. */
static bool
hold_back(struct lane *l, struct item *it, int64_t copy_version, int64_t *waited_ms)
{
	struct applier *a = l->a;
	const struct event *ev = &it->ev;
	struct held *h = held_note(l, it->meta.stream_seq);
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
	js_nak(a->nc, it->m, delay);
	metrics_add(a->m_held_back, 1);
	if (h->times == 1)
		log_info("held back %s user=%" PRId64 " version=%" PRId64 " seq=%" PRIu64 ": the copy is "
		    "at version %" PRId64 ", waiting for the versions between event=%s", ev->type,
		    ev->user_id, ev->version, it->meta.stream_seq, copy_version, ev->event_id);
	else
		log_debug("held back %s user=%" PRId64 " version=%" PRId64 " seq=%" PRIu64 " again "
		    "(%d times, %.1fs): the copy is at version %" PRId64 " event=%s", ev->type,
		    ev->user_id, ev->version, it->meta.stream_seq, h->times, (double)waited / 1000.0,
		    copy_version, ev->event_id);
	return true;
}

/* What a settled event did, for settle(). */
struct outcome {
	enum copy_store_result r;	/* COPY_STORE_APPLIED or COPY_STORE_STALE */
	bool gap;			/* applied over missing versions */
	int64_t copy_version;		/* the copy's version it was applied over, with gap */
	int64_t waited_ms;		/* how long it waited for them */
};

/* MongoDB confirmed that the copy is at the event's version or past it (applied or stale):
 * wakes the readers waiting for it, acknowledges the message, and counts and logs what
 * happened. */
static void
settle(struct lane *l, struct item *it, const struct outcome *o)
{
	struct applier *a = l->a;
	const struct event *ev = &it->ev;
	char err[512];

	held_forget(l, it->meta.stream_seq);
	if (o->r == COPY_STORE_APPLIED)
		notify_applied(a);	/* readers waiting for this version need not wait for the ack */
	if (a->copy_at != NULL)
		a->copy_at(a->copy_at_arg, ev->user_id, ev->version);
	FAILPOINT("consumer.after_write_before_ack");
	if (js_ack(a->nc, it->m, err, sizeof(err)) != 0)
		log_warnx("%s; it will be redelivered and found stale event=%s", err, ev->event_id);
	it->done = true;
	if (o->r == COPY_STORE_APPLIED) {
		double now = (double)wall_us();

		metrics_add(a->m_applied, 1);
		metrics_observe(a->m_commit_latency, (now - (double)ev->occurred_us) / 1e6);
		metrics_observe(a->m_publish_latency, (now - (double)it->meta.timestamp_ns / 1e3) / 1e6);
		log_info("applied %s user=%" PRId64 " version=%" PRId64 " seq=%" PRIu64 " event=%s",
		    ev->type, ev->user_id, ev->version, it->meta.stream_seq, ev->event_id);
		if (o->gap) {
			metrics_add(a->m_gaps, 1);
			log_warnx("version gap: user=%" PRId64 " version=%" PRId64 " applied over the copy's "
			    "version %" PRId64 " (0: no document) after waiting %.1fs for the versions "
			    "between seq=%" PRIu64 " event=%s", ev->user_id, ev->version, o->copy_version,
			    (double)o->waited_ms / 1000.0, it->meta.stream_seq, ev->event_id);
		}
		recent_add(l, ev, &it->meta);
	} else {
		metrics_add(a->m_stale, 1);
		log_info("stale %s user=%" PRId64 " version=%" PRId64 " seq=%" PRIu64
		    " delivered=%" PRIu64 " event=%s", ev->type, ev->user_id, ev->version,
		    it->meta.stream_seq, it->meta.delivered, ev->event_id);
	}
}

/* Settles items[i] on its own, with store_apply() and its reads: in order, or held back while a
 * version before it is missing, or over the gap once it waited long enough. Returns false when
 * shutdown or the loss of the lease interrupted it. */
static bool
handle_alone(struct lane *l, struct item *items, size_t i, size_t n)
{
	struct item *it = &items[i];
	struct outcome o = { .r = COPY_STORE_ERROR };

	if (!may_apply(l->a))
		return false;
	if (!apply_until_confirmed(l, it, COPY_STORE_IN_ORDER, &o.copy_version, items, n, &o.r))
		return false;
	if (o.r == COPY_STORE_EARLY) {
		if (hold_back(l, it, o.copy_version, &o.waited_ms)) {
			it->done = true;
			return true;
		}
		/* Waited long enough: the missing versions are not coming (dead-lettered, purged,
		 * past the stream's retention). Applied over the gap, so the user is not stuck. */
		if (!apply_until_confirmed(l, it, COPY_STORE_OVER_GAP, NULL, items, n, &o.r))
			return false;
		o.gap = o.r == COPY_STORE_APPLIED;
	}
	settle(l, it, &o);
	return true;
}

/* Marks items[i] and every later one of its user to go on their own, in order. */
static void
mark_alone(struct item *items, size_t i, size_t n)
{
	int64_t user = items[i].ev.user_id;

	for (size_t k = i; k < n; k++)
		if (!items[k].done && items[k].poison == NULL && items[k].ev.user_id == user)
			items[k].alone = true;
}

/* The first events of their users not settled yet, at most one per user, in order: their
 * indexes into round; returns how many. */
static size_t
next_round(const struct item *items, size_t n, size_t *round)
{
	size_t nr = 0;

	for (size_t i = 0; i < n; i++) {
		bool seen = false;

		if (items[i].done)
			continue;
		for (size_t k = 0; k < nr && !seen; k++)
			seen = items[round[k]].ev.user_id == items[i].ev.user_id;
		if (!seen)
			round[nr++] = i;
	}
	return nr;
}

/* Applies a lane's batch: poison to the dead-letter stream, then rounds of one event per user, in
 * bulk (store_apply_batch()) where it can and on its own where the bulk could not prove the
 * outcome, each user's events in order. Returns false when shutdown or the loss of the lease
 * interrupted it; what is not settled then is the caller's to hand back. */
static bool
lane_apply(struct lane *l, struct item *items, size_t n)
{
	struct applier *a = l->a;
	struct copy_batch_item *bulk = l->bulk;
	size_t *round = l->round, *in_bulk = l->in_bulk;
	size_t left = 0;
	char err[512];

	for (size_t i = 0; i < n; i++) {
		if (items[i].poison != NULL) {
			if (!may_apply(a) || shutdown_requested())
				return false;
			FAILPOINT("consumer.after_fetch_before_apply");
			item_scope(&items[i]);
			dead_letter(a, items[i].m, &items[i].meta, items[i].poison);
			log_scope_clear();
			items[i].done = true;
			continue;
		}
		left++;
	}
	while (left > 0) {
		size_t nr, nb = 0;

		/* Another process may apply once the lease is gone: not one more write. */
		if (!may_apply(a) || shutdown_requested())
			return false;
		nr = next_round(items, n, round);
		for (size_t k = 0; k < nr; k++) {
			struct item *it = &items[round[k]];

			/* Once per event, before anything of it is written. */
			if (!it->tried)
				FAILPOINT("consumer.after_fetch_before_apply");
			it->tried = true;
			if (!it->alone && user_refused(it->ev.user_id))
				mark_alone(items, round[k], n);
			if (it->alone)
				continue;
			bulk[nb] = (struct copy_batch_item){ &it->ev, it->meta.timestamp_ns / 1000,
			    it->meta.stream_seq, COPY_BATCH_NOT_RUN };
			in_bulk[nb++] = round[k];
		}
		/* Checked again right before the write: the failpoints above may have stopped the
		 * process past the lease. */
		if (nb > 0 && !may_apply(a))
			return false;
		if (nb > 0) {
			lane_term_check(l);
			store_apply_batch(a->store, bulk, nb, err, sizeof(err));
			if (err[0] != '\0')
				log_debug("lane %d: %s; settling its events one by one", l->no, err);
		}
		for (size_t k = 0; k < nb; k++) {
			struct outcome o = { .r = COPY_STORE_APPLIED };

			if (bulk[k].outcome == COPY_BATCH_APPLIED) {
				item_scope(&items[in_bulk[k]]);
				settle(l, &items[in_bulk[k]], &o);
				log_scope_clear();
				left--;
			} else if (bulk[k].outcome == COPY_BATCH_ALONE) {
				mark_alone(items, in_bulk[k], n);
			}
		}
		for (size_t k = 0; k < nr; k++) {
			struct item *it = &items[round[k]];
			bool handled;

			if (it->done || !it->alone)
				continue;
			item_scope(it);
			handled = handle_alone(l, items, round[k], n);
			log_scope_clear();
			if (!handled)
				return false;
			left--;
		}
		/* The round's acks reach the server before the next round's writes: one round trip
		 * per round, and a crash after it does not bring the round's events back. */
		if (natsconn_ok(a->nc))
			natsConnection_FlushTimeout(a->nc, a->cfg->nats_timeout_ms);
	}
	return true;
}

static void
item_release(struct item *it)
{
	if (it->poison == NULL)
		event_release(&it->ev);
	free(it->poison);
	natsMsg_Destroy(it->m);
	*it = (struct item){ 0 };
}

/* Hands a message back at once (its nak after an applied one only brings it back as stale). */
static void
item_hand_back(struct applier *a, struct item *it)
{
	if (!it->done)
		js_nak(a->nc, it->m, 0);
	item_release(it);
}

static void
room_signal(struct applier *a, long settled)
{
	pthread_mutex_lock(&a->room_lock);
	atomic_fetch_sub(&a->in_hand, settled);
	pthread_cond_signal(&a->room_cond);
	pthread_mutex_unlock(&a->room_lock);
}

static void *
lane_run(void *arg)
{
	struct lane *l = arg;
	struct applier *a = l->a;
	size_t cap = (size_t)a->cfg->batch;
	struct item *items = l->items;

	for (;;) {
		size_t n = 0;
		bool stop;

		pthread_mutex_lock(&l->lock);
		if (l->qlen == 0 && !l->stop) {
			struct timespec ts = clock_after_ms(CLOCK_REALTIME, 200);

			pthread_cond_timedwait(&l->cond, &l->lock, &ts);
		}
		stop = l->stop;
		while (n < cap && l->qlen > 0) {
			items[n++] = l->queue[l->qhead];
			l->qhead = (l->qhead + 1) % l->qcap;
			l->qlen--;
		}
		pthread_mutex_unlock(&l->lock);
		if (stop && n == 0)
			break;
		if (n > 0) {
			/* Stopping, or interrupted: what is not settled goes back at once. */
			bool applied = !stop && lane_apply(l, items, n);

			for (size_t i = 0; i < n; i++)
				if (applied)
					item_release(&items[i]);
				else
					item_hand_back(a, &items[i]);
			room_signal(a, (long)n);
		}
		if (atomic_load(&a->mongo_ok))
			recent_check(l);
		held_prune(l);
	}
	return NULL;
}

/* The lane of a user: a hash of its id, so that a user's events always go to the same lane. */
static int
lane_of(const struct applier *a, int64_t user_id)
{
	uint64_t h = (uint64_t)user_id * 0x9e3779b97f4a7c15ULL;

	return (int)((h >> 32) % (uint64_t)a->nlanes);
}

/* Decodes m and queues it on its lane, or hands it back for later when that lane is full. Takes
 * m over. */
static void
dispatch(struct applier *a, natsMsg *m)
{
	struct item it = { .m = m };
	struct lane *l;
	char err[512];

	if (!js_meta_parse(natsMsg_GetReply(m), &it.meta)) {
		log_warnx("message on \"%s\" without JetStream metadata ignored", natsMsg_GetSubject(m));
		natsMsg_Destroy(m);
		return;
	}
	if (applier_decode(m, &it.ev, err, sizeof(err)) != 0 && (it.poison = strdup(err)) == NULL)
		it.poison = strdup("could not be decoded");
	/* Poison has no user to go by: spread by its sequence. */
	l = &a->lanes[it.poison != NULL ? (int)(it.meta.stream_seq % (uint64_t)a->nlanes) :
	    lane_of(a, it.ev.user_id)];
	pthread_mutex_lock(&l->lock);
	if (l->qlen < l->qcap) {
		l->queue[(l->qhead + l->qlen) % l->qcap] = it;
		l->qlen++;
		atomic_fetch_add(&a->in_hand, 1);
		pthread_cond_signal(&l->cond);
		pthread_mutex_unlock(&l->lock);
		return;
	}
	pthread_mutex_unlock(&l->lock);
	log_debug("lane %d full: seq=%" PRIu64 " handed back for later", l->no, it.meta.stream_seq);
	js_nak(a->nc, m, LANE_FULL_DELAY_MS);
	item_release(&it);
}

/* How many messages the next fetch may ask for: the lanes hold at most one batch more than one
 * each, so that a lane that falls behind does not make the process fetch without bound. Waits a
 * little for room when there is none. */
static int
fetch_room(struct applier *a)
{
	long most = (long)(a->nlanes + 1) * a->cfg->batch, room;

	pthread_mutex_lock(&a->room_lock);
	if (atomic_load(&a->in_hand) >= most) {
		struct timespec ts = clock_after_ms(CLOCK_REALTIME, 100);

		pthread_cond_timedwait(&a->room_cond, &a->room_lock, &ts);
	}
	room = most - atomic_load(&a->in_hand);
	pthread_mutex_unlock(&a->room_lock);
	if (room > a->cfg->batch)
		room = a->cfg->batch;
	return room > 0 ? (int)room : 0;
}

/* The fetching thread: pulls batches while this process holds the lease and MongoDB answers, and
 * hands each message to its lane. */
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
		int n, room;

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
		if ((room = fetch_room(a)) == 0)
			continue;
		fetched = js_pull_fetch(a->pull, msgs, room, a->cfg->fetch_expiry_ms, &n, err,
		    sizeof(err));
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
		for (int i = 0; i < n; i++) {
			if (shutdown_requested() || !may_apply(a)) {
				js_nak(a->nc, msgs[i], 0);
				natsMsg_Destroy(msgs[i]);
			} else {
				dispatch(a, msgs[i]);
			}
			msgs[i] = NULL;
		}
	}
	free(msgs);
	/* The lanes hand back what they hold once this thread ends (applier_join()); an open pull
	 * request would take those messages back to this process. */
	if (a->pull != NULL)
		js_pull_close(a->pull);
	return NULL;
}

static void
lanes_stop(struct applier *a)
{
	for (int i = 0; i < a->nlanes; i++) {
		struct lane *l = &a->lanes[i];

		pthread_mutex_lock(&l->lock);
		l->stop = true;
		pthread_cond_signal(&l->cond);
		pthread_mutex_unlock(&l->lock);
	}
	for (int i = 0; i < a->nlanes; i++)
		if (a->lanes[i].started) {
			pthread_join(a->lanes[i].thread, NULL);
			a->lanes[i].started = false;
		}
}

int
applier_start(struct applier *a, char *err, size_t errlen)
{
	int e;

	for (int i = 0; i < a->nlanes; i++) {
		struct lane *l = &a->lanes[i];

		size_t batch = (size_t)a->cfg->batch;

		l->queue = calloc(l->qcap, sizeof(*l->queue));
		l->items = calloc(batch, sizeof(*l->items));
		l->bulk = calloc(batch, sizeof(*l->bulk));
		l->round = calloc(batch, sizeof(*l->round));
		l->in_bulk = calloc(batch, sizeof(*l->in_bulk));
		if (l->queue == NULL || l->items == NULL || l->bulk == NULL || l->round == NULL ||
		    l->in_bulk == NULL) {
			snprintf(err, errlen, "out of memory");
			lanes_stop(a);
			return -1;
		}
		if ((e = pthread_create(&l->thread, NULL, lane_run, l)) != 0) {
			snprintf(err, errlen, "could not start apply lane %d: %s", i, strerror(e));
			lanes_stop(a);
			return -1;
		}
		l->started = true;
	}
	if ((e = pthread_create(&a->thread, NULL, applier_run, a)) != 0) {
		snprintf(err, errlen, "could not start the fetching thread: %s", strerror(e));
		lanes_stop(a);
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
	/* The lanes finish the event in hand and hand the rest back. */
	lanes_stop(a);
	if (natsconn_ok(a->nc))
		natsConnection_FlushTimeout(a->nc, 1000);
}

void
applier_free(struct applier *a)
{
	if (a == NULL)
		return;
	applier_join(a);
	for (int i = 0; i < a->nlanes; i++) {
		struct lane *l = &a->lanes[i];

		for (size_t k = 0; k < l->qlen; k++)
			item_hand_back(a, &l->queue[(l->qhead + k) % l->qcap]);
		for (size_t k = 0; k < l->nrecent; k++)
			event_release(&l->recent[k].ev);
		free(l->recent);
		free(l->held);
		free(l->queue);
		free(l->items);
		free(l->bulk);
		free(l->round);
		free(l->in_bulk);
		pthread_mutex_destroy(&l->lock);
		pthread_cond_destroy(&l->cond);
	}
	free(a->lanes);
	js_pull_free(a->pull);
	jsCtx_Destroy(a->js);
	pthread_mutex_destroy(&a->lock);
	pthread_mutex_destroy(&a->check_lock);
	pthread_mutex_destroy(&a->room_lock);
	pthread_cond_destroy(&a->room_cond);
	pthread_mutex_destroy(&a->wait_lock);
	pthread_cond_destroy(&a->wait_cond);
	free(a);
}
