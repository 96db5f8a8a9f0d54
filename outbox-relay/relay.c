/* Relays committed outbox rows to JetStream; at-least-once, in id order, one leader per database. */
#include "relay.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "failpoint.h"
#include "leader.h"
#include "log.h"
#include "metrics.h"
#include "natsconn.h"
#include "pg.h"
#include "retained.h"
#include "stream.h"
#include "util.h"
#include "watch.h"


enum role { ROLE_ELECTING, ROLE_STANDBY, ROLE_LEADER };

/* Every 16th claim made ahead starts from the oldest row (see relay_step()). */
#define CLAIM_FROM_OLDEST_EVERY 16

/* The wait before the next sweep once one found less than a full batch past RELAY_RETAIN. */
#define SWEEP_PAUSE_MS 1000

/* The reasons a restore can have, as labels of relay_stream_restores_total. */
static const enum watch_reason restore_reasons[] = { WATCH_MISSING, WATCH_RECREATED,
	WATCH_WENT_BACK, WATCH_PURGED };

/* A slot's batch goes IDLE -> CLAIMING -> CLAIMED -> SENT -> ACKED, and back to CLAIMING (its
 * commit and the next claim in one round trip) or to IDLE (committed alone, or rolled back). One
 * function below makes each move; any failure brings the slot back to IDLE with its rows left in
 * the outbox. */
enum slot_state {
	SLOT_IDLE,			/* no transaction open, nothing in flight */
	SLOT_CLAIMING,			/* a claim (behind the commit of the batch before, maybe) sent */
	SLOT_CLAIMED,			/* rows claimed, not published yet */
	SLOT_SENT,			/* published; the transaction waits for the PubAcks */
	SLOT_ACKED,			/* every PubAck in; the marking and commit still to do */
};

/* What a step of the leader, or a part of one, asks the loop to do next. */
enum step_kind {
	STEP_CONTINUE,			/* go on: more rows wait, or nothing stands in the way */
	STEP_IDLE,			/* the outbox is (nearly) empty: wait wait_ms or for a nudge */
	STEP_FAILED,			/* a batch failed (logged): back off, then try again */
	STEP_WAIT,			/* a dependency is not ready (logged): wait wait_ms */
};

struct step {
	enum step_kind kind;
	long wait_ms;
};

/* One batch of the pipeline. Each slot has its own PostgreSQL connection (the claim's transaction
 * stays open until the PubAcks are in) and its own JetStream context (js_PublishAsyncComplete
 * waits per context, and the PubAck handler's closure is the slot's batch). All slots publish on
 * the one NATS connection, in the order they claimed, so the stream keeps id order. */
struct slot {
	struct outbox_batch *batch;
	jsCtx *js;
	PGconn *work;
	enum slot_state state;
	long claimed;			/* rows of the batch in hand */
	struct batch_result done;	/* the batch whose commit went with the claim */
};

struct relay {
	const struct relay_settings *s;
	natsConnection *nc;
	natsSubscription *nudge;
	struct leader *leader;
	struct slot slots[RELAY_PIPELINE_MAX];
	size_t nslots;
	size_t next;			/* the slot that claims next: the oldest one in flight */
	struct slot *held;		/* the slot with a claimed batch not yet published, or NULL */
	unsigned long ahead_claims;
	long poll_ms;			/* the adaptive poll's current wait */
	bool stream_ready;		/* provisioned since the last failure */
	int64_t backlog_due_ms;
	int64_t sweep_due_ms;
	struct backoff backoff;

	/* The stream watch (see relay_check()). */
	int64_t check_due_ms;		/* the next periodic check */
	bool check_now;			/* a check before the next claim: new leadership, a NATS
					 * reconnect, a stream created, or PubAcks that went back */
	bool stream_created;		/* the relay created the stream since the last check */
	uint64_t reconnects;		/* the NATS connection's reconnects at the last check */
	natsStatistics *stats;
	struct watch_acks acks;		/* fresh PubAcks since the last check */
	uint64_t held_first;		/* the first sequence of the purge whose held rows were logged */
	bool sealed;			/* the stream was sealed at the last check (logged once) */
	double gap_events;

	pthread_mutex_t mu;		/* guards nudged and problem */
	pthread_cond_t cond;
	bool nudged;
	char problem[256];		/* why the relay cannot work right now, for /readyz */
	atomic_int role;
	atomic_bool pg_ok;

	struct metrics_series *m_leader, *m_backlog, *m_oldest, *m_published, *m_duplicates,
	    *m_failed, *m_batches_failed, *m_dead, *m_batch_size, *m_publish_seconds;
	struct metrics_series *m_kept, *m_kept_oldest, *m_swept, *m_checks, *m_restored, *m_gap,
	    *m_refused_full, *m_refused_sealed;
	struct metrics_series *m_restores[ARRAY_SIZE(restore_reasons)];
};

static const double batch_bounds[] = { 1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000 };

static void
on_nudge(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	struct relay *r = closure;

	(void)nc;
	(void)sub;
	natsMsg_Destroy(msg);
	pthread_mutex_lock(&r->mu);
	r->nudged = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

static void
set_problem(struct relay *r, const char *text)
{
	pthread_mutex_lock(&r->mu);
	snprintf(r->problem, sizeof(r->problem), "%s", text);
	pthread_mutex_unlock(&r->mu);
}

struct relay *
relay_new(const struct relay_settings *s, char *err, size_t errlen)
{
	struct relay *r = calloc(1, sizeof(*r));
	jsOptions jo;
	natsStatus st;

	if (r == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->s = s;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	backoff_init(&r->backoff, 100, 5000);
	atomic_store(&r->role, ROLE_ELECTING);
	snprintf(r->problem, sizeof(r->problem), "starting");
	r->nslots = s->pipeline < 1 ? 1 : s->pipeline > RELAY_PIPELINE_MAX ? RELAY_PIPELINE_MAX :
	    (size_t)s->pipeline;
	for (size_t i = 0; i < r->nslots; i++) {
		r->slots[i].batch = outbox_batch_new();
		if (r->slots[i].batch == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	r->leader = leader_new(&s->pg, "outbox-relay leader lock", s->lock_key);
	if (r->leader == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	r->nc = natsconn_open(&s->nats, "outbox-relay", false, err, errlen);
	if (r->nc == NULL)
		goto fail;
	st = NATS_OK;
	for (size_t i = 0; i < r->nslots && st == NATS_OK; i++) {
		jsOptions_Init(&jo);
		jo.Wait = s->publish_timeout_ms;
		outbox_batch_js_options(r->slots[i].batch, &jo);
		st = natsConnection_JetStream(&r->slots[i].js, r->nc, &jo);
	}
	if (st == NATS_OK)
		st = natsConnection_Subscribe(&r->nudge, r->nc, OUTBOX_NUDGE_SUBJECT, on_nudge, r);
	if (st == NATS_OK)
		st = natsStatistics_Create(&r->stats);
	if (st != NATS_OK) {
		snprintf(err, errlen, "could not set up JetStream publishing: %s", natsStatus_GetText(st));
		goto fail;
	}

	r->m_leader = metrics_gauge("relay_leader", "1 while this relay holds the leader lock", NULL);
	r->m_backlog = metrics_gauge("relay_outbox_backlog", "Rows waiting in the outbox, not "
	    "published yet (refreshed periodically by the leader)", NULL);
	r->m_oldest = metrics_gauge("relay_outbox_oldest_age_seconds", "Age of the oldest row waiting "
	    "in the outbox (refreshed periodically by the leader)", NULL);
	r->m_kept = metrics_gauge("relay_outbox_retained", "Published rows kept in the outbox for "
	    "RELAY_RETAIN (refreshed periodically by the leader)", NULL);
	r->m_kept_oldest = metrics_gauge("relay_outbox_retained_oldest_age_seconds", "Time since the "
	    "oldest kept row was published (refreshed periodically by the leader)", NULL);
	r->m_swept = metrics_counter("relay_events_swept_total", "Published rows deleted after "
	    "RELAY_RETAIN", NULL);
	r->m_checks = metrics_counter("relay_stream_checks_total", "Checks of the stream against what "
	    "it acknowledged", NULL);
	for (size_t i = 0; i < ARRAY_SIZE(restore_reasons); i++) {
		r->m_restores[i] = metrics_counter("relay_stream_restores_total", "Times the stream was "
		    "found without events it had acknowledged, and kept rows were published again",
		    "reason", watch_reason_label(restore_reasons[i]), NULL);
	}
	r->m_restored = metrics_counter("relay_events_restored_total", "Kept rows published again "
	    "because the stream lost them", NULL);
	r->m_gap = metrics_gauge("relay_stream_gap_events", "Events the stream lost that no kept row "
	    "could restore (older than RELAY_RETAIN), found since start; outbox-relay snapshot refills",
	    NULL);
	r->m_refused_full = metrics_counter("relay_stream_refusals_total", "Batches the stream refused "
	    "(rolled back and retried)", "reason", "full", NULL);
	r->m_refused_sealed = metrics_counter("relay_stream_refusals_total", "Batches the stream "
	    "refused (rolled back and retried)", "reason", "sealed", NULL);
	r->m_published = metrics_counter("relay_events_published_total", "Events acknowledged by "
	    "JetStream and marked published in the outbox", NULL);
	r->m_duplicates = metrics_counter("relay_events_duplicate_total", "Events JetStream already "
	    "had (acknowledged as duplicates)", NULL);
	r->m_failed = metrics_counter("relay_events_failed_total", "Events without a positive PubAck "
	    "(left in the outbox and retried)", NULL);
	r->m_batches_failed = metrics_counter("relay_batches_failed_total", "Batches rolled back", NULL);
	r->m_dead = metrics_counter("relay_events_dead_total", "Events moved to outbox_dead because "
	    "they can never be published", NULL);
	r->m_batch_size = metrics_histogram("relay_batch_size", "Rows claimed per non-empty batch",
	    batch_bounds, ARRAY_SIZE(batch_bounds), NULL);
	r->m_publish_seconds = metrics_histogram("relay_publish_duration_seconds", "Time from the "
	    "first publish of a batch to its last PubAck", metrics_latency_bounds,
	    metrics_latency_nbounds, NULL);
	metrics_set(r->m_leader, 0);
	return r;
fail:
	relay_free(r);
	return NULL;
}

void
relay_free(struct relay *r)
{
	if (r == NULL)
		return;
	if (r->nudge != NULL) {
		natsSubscription_Unsubscribe(r->nudge);
		natsSubscription_Destroy(r->nudge);
	}
	for (size_t i = 0; i < r->nslots; i++) {
		if (r->slots[i].js != NULL)
			jsCtx_Destroy(r->slots[i].js);
	}
	if (r->nc != NULL) {
		natsConnection_Close(r->nc);
		natsConnection_Destroy(r->nc);
	}
	natsStatistics_Destroy(r->stats);
	leader_free(r->leader);
	/* The batches go last: they are the PubAck handlers' closures. */
	for (size_t i = 0; i < r->nslots; i++) {
		if (r->slots[i].work != NULL)
			PQfinish(r->slots[i].work);
		outbox_batch_free(r->slots[i].batch);
	}
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

long
relay_next_poll(long prev_ms, long claimed, long limit, long min_ms, long max_ms)
{
	long next;

	if (claimed >= limit)
		return 0;
	if (claimed > 0 || prev_ms <= 0)
		return min_ms;
	next = prev_ms * 2;
	return next > max_ms ? max_ms : next;
}

/* Waits up to ms for a nudge; returns early on a nudge or a shutdown request. */
static void
relay_wait(struct relay *r, long ms)
{
	int64_t end = mono_ms() + ms;

	pthread_mutex_lock(&r->mu);
	while (!r->nudged && !shutdown_requested()) {
		int64_t left = end - mono_ms();
		struct timespec ts;

		if (left <= 0)
			break;
		if (left > 100)
			left = 100;	/* the signal handler only sets a flag */
		ts = clock_after_ms(CLOCK_REALTIME, left);
		pthread_cond_timedwait(&r->cond, &r->mu, &ts);
	}
	r->nudged = false;
	pthread_mutex_unlock(&r->mu);
}

static void
become(struct relay *r, enum role role)
{
	enum role was = (enum role)atomic_exchange(&r->role, role);

	if (was == role)
		return;
	metrics_set(r->m_leader, role == ROLE_LEADER ? 1 : 0);
	if (role == ROLE_LEADER) {
		/* Another leader may have published meanwhile: look at the stream before claiming. */
		r->check_now = true;
		log_info("became the leader: relaying the outbox");
	} else {
		memset(&r->acks, 0, sizeof(r->acks));
	}
	if (role == ROLE_STANDBY)
		log_info("standing by: another relay holds the leader lock");
}

static void
slot_drop_work(struct slot *s)
{
	if (s->work != NULL)
		PQfinish(s->work);
	s->work = NULL;
}

/* Measured on a slot's connection while it has no transaction open. */
static void
backlog_refresh(struct relay *r, struct slot *s)
{
	struct outbox_gauges g;
	char err[512];

	if (mono_ms() < r->backlog_due_ms)
		return;
	r->backlog_due_ms = mono_ms() + r->s->backlog_interval_ms;
	if (retained_measure(s->work, &g, err, sizeof(err)) != 0) {
		log_warnx("%s", err);
		if (PQstatus(s->work) != CONNECTION_OK)
			slot_drop_work(s);
		return;
	}
	metrics_set(r->m_backlog, g.waiting);
	metrics_set(r->m_oldest, g.waiting_age_s);
	metrics_set(r->m_kept, g.kept);
	metrics_set(r->m_kept_oldest, g.kept_age_s);
}

/* Deletes published rows past RELAY_RETAIN on slot s's connection while it has no transaction
 * open: one bounded statement per call, in the leader's loop, so that a sweep never runs while a
 * check decides what to publish again. While it finds full batches it goes on at the next step
 * (one batch of sweeping per batch relayed), else a second later. */
static void
relay_sweep(struct relay *r, struct slot *s)
{
	char err[512];
	long n;

	if (mono_ms() < r->sweep_due_ms)
		return;
	n = retained_sweep(s->work, EVENT_STREAM, r->s->retain_ms, r->s->sweep_batch, err,
	    sizeof(err));
	if (n < 0) {
		log_warnx("%s", err);
		r->sweep_due_ms = mono_ms() + SWEEP_PAUSE_MS;
		if (PQstatus(s->work) != CONNECTION_OK)
			slot_drop_work(s);
		return;
	}
	metrics_add(r->m_swept, (uint64_t)n);
	r->sweep_due_ms = n >= r->s->sweep_batch ? 0 : mono_ms() + SWEEP_PAUSE_MS;
	if (n > 0)
		log_debug("swept %ld published rows kept longer than RELAY_RETAIN", n);
}

static const struct step step_continue = { STEP_CONTINUE, 0 };
static const struct step step_failed = { STEP_FAILED, 0 };

/* Counts a failed batch of slot s and drops its connection when that is what failed. */
static void
slot_failed(struct relay *r, struct slot *s, const char *err)
{
	metrics_add(r->m_batches_failed, 1);
	set_problem(r, err);
	s->state = SLOT_IDLE;
	if (s->work != NULL && PQstatus(s->work) != CONNECTION_OK)
		slot_drop_work(s);
}

/* A batch whose marking or commit failed: its rows stay waiting, to be published again. */
static void
commit_failed(struct relay *r, struct slot *s, const char *err)
{
	log_warnx("%s; the published events stay in the outbox and are republished "
	    "(JetStream drops the duplicates)", err);
	slot_failed(r, s, err);
}

static void
count_committed(struct relay *r, const struct batch_result *res)
{
	metrics_add(r->m_published, res->acked);
	metrics_add(r->m_duplicates, res->duplicates);
	metrics_add(r->m_dead, res->dead);
	metrics_observe(r->m_batch_size, (double)res->claimed);
	metrics_observe(r->m_publish_seconds, res->publish_seconds);
	log_debug("relayed %zu events (%zu duplicates, %zu dead) in %.3fs", res->acked,
	    res->duplicates, res->dead, res->publish_seconds);
}

/* Logs the rows the last bury of slot s moved to outbox_dead. */
static void
log_buried(struct relay *r, struct slot *s, long dead)
{
	for (size_t i = 0; i < (size_t)dead; i++) {
		const char *subject, *event_id;
		size_t bytes;

		event_id = outbox_batch_dead_id(s->batch, i, &subject, &bytes);
		if (event_id == NULL)
			continue;
		log_scope_set(LOG_ID_EVENT, event_id);
		log_error("event %s: moved to outbox_dead: its %zu-byte body on \"%s\" is over the "
		    "server's maximum payload of %" PRId64 " bytes", event_id, bytes, subject,
		    natsConnection_GetMaxPayload(r->nc));
		log_scope_clear();
	}
}

/* IDLE or ACKED -> CLAIMING (limit > 0) or IDLE (limit 0, ACKED only): sends a claim of up to
 * limit rows after the id after (0: from the oldest row). From ACKED the batch's marking and
 * commit go first in the same round trip. The failpoints sit before and after that round trip is
 * sent; an error there fails the batch as a lost commit would. Returns 0, or -1 after a failure
 * (logged; the slot is IDLE, the rows stay in the outbox). */
static int
slot_claim(struct relay *r, struct slot *s, long limit, int64_t after)
{
	char err[512];

	if (s->state == SLOT_IDLE) {
		if (outbox_batch_claim_send(s->batch, s->work, limit, after, err, sizeof(err)) != 0) {
			log_warnx("%s", err);
			slot_failed(r, s, err);
			return -1;
		}
		s->state = SLOT_CLAIMING;
		return 0;
	}
	if (FAILPOINT("relay.after_acks_before_commit") != 0) {
		outbox_batch_rollback(s->batch, s->work);
		commit_failed(r, s, "could not commit the batch: failpoint");
		return -1;
	}
	if (outbox_batch_commit_send(s->batch, s->work, limit, after, &s->done, err,
	    sizeof(err)) != 0) {
		commit_failed(r, s, err);
		return -1;
	}
	s->state = SLOT_CLAIMING;
	if (FAILPOINT("relay.commit_sent_before_result") != 0) {
		/* The answer is lost with the connection: the commit may or may not have happened. */
		slot_drop_work(s);
		commit_failed(r, s, "could not commit the batch: failpoint (connection dropped with the "
		    "commit in flight)");
		return -1;
	}
	return 0;
}

/* CLAIMING -> CLAIMED (rows claimed) or IDLE: reads the round trip's answer, counts the batch it
 * committed, and moves the claimed rows that can never be published to outbox_dead. Returns the
 * rows claimed, or -1 after a failure (logged; the slot is IDLE, rolled back). */
static long
slot_collect(struct relay *r, struct slot *s)
{
	enum batch_commit commit;
	char err[512];
	long n, dead;

	n = outbox_batch_collect(s->batch, s->work, &commit, err, sizeof(err));
	if (commit == BATCH_COMMIT_FAILED) {
		commit_failed(r, s, err);
		return -1;
	}
	if (commit == BATCH_COMMITTED)
		count_committed(r, &s->done);
	if (n < 0) {
		log_warnx("%s", err);
		slot_failed(r, s, err);
		return -1;
	}
	if (n == 0) {
		outbox_batch_rollback(s->batch, s->work);
		s->state = SLOT_IDLE;
		return 0;
	}
	dead = outbox_batch_bury(s->batch, s->work, natsConnection_GetMaxPayload(r->nc), err,
	    sizeof(err));
	if (dead < 0) {
		log_warnx("%s", err);
		outbox_batch_rollback(s->batch, s->work);
		slot_failed(r, s, err);
		return -1;
	}
	log_buried(r, s, dead);
	s->state = SLOT_CLAIMED;
	s->claimed = n;
	return n;
}

/* CLAIMED -> SENT: publishes the batch without waiting for the PubAcks. */
static void
slot_publish(struct relay *r, struct slot *s)
{
	outbox_batch_send(s->batch, s->js, r->s->publish_timeout_ms);
	s->state = SLOT_SENT;
}

/* What a negative PubAck of the stream itself means for the operator, appended to the batch's
 * failure line, and the refusal counted. */
static const char *
refusal(struct relay *r, int js_error)
{
	switch (js_error) {
	case JSStreamStoreFailedErr:
		metrics_add(r->m_refused_full, 1);
		return "; the stream refuses to store events (full: a limit such as RELAY_STREAM_MAX_BYTES "
		    "is reached, or its storage is): they wait in the outbox until it has room";
	case JSStreamSealedErr:
		metrics_add(r->m_refused_sealed, 1);
		return "; the stream is sealed and takes no more events: they wait in the outbox until "
		    "it is replaced (deleted, the relay creates it anew and publishes every kept row again)";
	default:
		return "";
	}
}

/* SENT -> ACKED: waits for the PubAcks; any row without a positive PubAck rolls the whole batch
 * back. The sequences of the fresh PubAcks go to the stream watch, in the order the batches were
 * claimed: one at or below an earlier one means the stream went back, and asks for a check.
 * Returns 0, or -1 after a failure (logged; the slot is IDLE, the rows stay in the outbox). */
static int
slot_await(struct relay *r, struct slot *s)
{
	struct batch_result res;
	char err[512];
	int rc;

	if (FAILPOINT("relay.after_publish_before_acks") != 0) {
		outbox_batch_forget(s->batch, s->js);
		snprintf(err, sizeof(err), "could not wait for PubAcks: failpoint");
		rc = -1;
	} else {
		rc = outbox_batch_await(s->batch, s->js, r->s->publish_timeout_ms, err, sizeof(err));
	}
	if (rc != 0) {
		outbox_batch_result(s->batch, &res);
		outbox_batch_rollback(s->batch, s->work);
		log_warnx("%s; rolled back the batch of %zu (%zu acknowledged, %zu not), retrying%s",
		    err, res.claimed, res.acked, res.failed, refusal(r, res.js_error));
		metrics_add(r->m_failed, res.failed);
		r->stream_ready = false;	/* the stream may be gone: look again */
		slot_failed(r, s, err);
		return -1;
	}
	outbox_batch_scan_acks(s->batch, &r->acks);
	if (r->acks.back_low > 0)
		r->check_now = true;
	s->state = SLOT_ACKED;
	return 0;
}

/* ACKED -> IDLE: marks the acknowledged rows published and commits, without a claim behind.
 * Returns 0, or -1 after a failure (logged; the rows stay waiting). */
static int
slot_commit(struct relay *r, struct slot *s)
{
	if (slot_claim(r, s, 0, 0) != 0 || slot_collect(r, s) < 0)
		return -1;
	return 0;
}

/* Any state -> IDLE: a batch in flight is awaited and committed (or rolled back), one claimed but
 * not published is rolled back, a claim in flight is read and rolled back. Returns -1 when a
 * batch failed. */
static int
slot_finish(struct relay *r, struct slot *s)
{
	switch (s->state) {
	case SLOT_CLAIMING:
		if (slot_collect(r, s) < 0)
			return -1;
		if (s->state == SLOT_IDLE)
			return 0;
		/* FALLTHROUGH */
	case SLOT_CLAIMED:
		outbox_batch_rollback(s->batch, s->work);
		s->state = SLOT_IDLE;
		return 0;
	case SLOT_SENT:
		if (slot_await(r, s) != 0)
			return -1;
		/* FALLTHROUGH */
	case SLOT_ACKED:
		return slot_commit(r, s);
	case SLOT_IDLE:
		break;
	}
	return 0;
}

/* Ends every transaction of the pipeline: the batches in flight are finished oldest first
 * (committed when acknowledged), a batch claimed but not published is rolled back. Returns -1
 * when any of them failed. */
static int
relay_drain(struct relay *r)
{
	int rc = 0;

	for (size_t k = 0; k < r->nslots; k++) {
		if (slot_finish(r, &r->slots[(r->next + k) % r->nslots]) != 0)
			rc = -1;
	}
	r->held = NULL;
	return rc;
}

/* Without the leadership: ends every slot's transaction with its connection at once, and drops
 * the PubAcks still to come. The next leader republishes those rows. */
static void
relay_abandon(struct relay *r)
{
	for (size_t i = 0; i < r->nslots; i++) {
		struct slot *s = &r->slots[i];

		if (s->state == SLOT_SENT)
			outbox_batch_forget(s->batch, s->js);
		s->state = SLOT_IDLE;
		slot_drop_work(s);
	}
	r->held = NULL;
}

/* Makes sure slot s has its work connection. */
static struct step
relay_connect(struct relay *r, struct slot *s)
{
	char err[512];

	if (s->work != NULL)
		return step_continue;
	s->work = pg_connect(&r->s->pg, "outbox-relay", err, sizeof(err));
	if (s->work == NULL) {
		atomic_store(&r->pg_ok, false);
		log_warnx("%s; retrying", err);
		set_problem(r, "could not connect to PostgreSQL");
		return (struct step){ STEP_WAIT, backoff_next(&r->backoff) };
	}
	return step_continue;
}

/* Makes sure NATS is connected and the stream provisioned. */
static struct step
relay_prepare(struct relay *r)
{
	char err[512], note[1024];
	bool warn, created;

	if (!natsconn_ok(r->nc)) {
		set_problem(r, "NATS is not connected; events wait in the outbox");
		return (struct step){ STEP_WAIT, 200 };
	}
	if (!r->stream_ready) {
		if (stream_provision(r->slots[0].js, r->s, note, sizeof(note), &warn, &created, err,
		    sizeof(err)) != 0) {
			log_warnx("%s; retrying", err);
			set_problem(r, err);
			return (struct step){ STEP_WAIT, backoff_next(&r->backoff) };
		}
		if (note[0] != '\0' && warn)
			log_warnx("%s", note);
		else if (note[0] != '\0')
			log_info("%s", note);
		r->stream_ready = true;
		if (created) {
			/* A new stream holds none of the kept rows: the next check publishes them. */
			r->stream_created = true;
			r->check_now = true;
		}
	}
	return step_continue;
}

/* Readies slot s to claim. Its batch in flight is awaited; it is committed here too when the
 * slot needs its connection idle first (to measure the backlog gauges, also while NATS is away:
 * that is when the backlog grows, or to sweep) or the claim would wait anyway; otherwise the
 * commit goes with the claim. Then the connection, NATS and the stream are checked. */
static struct step
slot_ready(struct relay *r, struct slot *s, bool commit_now)
{
	struct step st;

	if (s->state == SLOT_SENT && slot_await(r, s) != 0)
		return step_failed;
	if (s->state == SLOT_ACKED && (commit_now || mono_ms() >= r->backlog_due_ms ||
	    mono_ms() >= r->sweep_due_ms || !r->stream_ready || !natsconn_ok(r->nc)) &&
	    slot_commit(r, s) != 0)
		return step_failed;
	if (s->state == SLOT_IDLE) {
		if ((st = relay_connect(r, s)).kind != STEP_CONTINUE)
			return st;
		backlog_refresh(r, s);
		if (s->work != NULL)
			relay_sweep(r, s);
		if (s->work == NULL)
			return (struct step){ STEP_WAIT, 1 };
	}
	return relay_prepare(r);
}

static struct slot *
relay_advance(struct relay *r)
{
	struct slot *s = &r->slots[r->next];

	r->next = (r->next + 1) % r->nslots;
	return s;
}

/* The outbox is (nearly) empty after a batch of claimed rows: finish everything in flight, then
 * wait for the adaptive poll or a nudge. */
static struct step
relay_settle(struct relay *r, long claimed)
{
	if (relay_drain(r) != 0)
		return step_failed;
	r->poll_ms = relay_next_poll(r->poll_ms, claimed, r->s->batch_size, r->s->poll_min_ms,
	    r->s->poll_max_ms);
	return (struct step){ STEP_IDLE, r->poll_ms };
}

/* Claims from the oldest row on the next slot and waits for the answer; the slot then holds the
 * batch in hand. */
static struct step
relay_claim_oldest(struct relay *r)
{
	struct slot *t = &r->slots[r->next];
	struct step st;
	long n;

	if ((st = slot_ready(r, t, true)).kind != STEP_CONTINUE)
		return st;
	if (slot_claim(r, t, r->s->batch_size, 0) != 0 || (n = slot_collect(r, t)) < 0)
		return step_failed;
	if (n == 0)
		return relay_settle(r, 0);
	r->held = relay_advance(r);
	return step_continue;
}

static uint64_t
nats_reconnects(struct relay *r)
{
	uint64_t in_msgs, in_bytes, out_msgs, out_bytes, reconnects = r->reconnects;

	if (natsConnection_GetStats(r->nc, r->stats) == NATS_OK)
		(void)natsStatistics_GetCounts(r->stats, &in_msgs, &in_bytes, &out_msgs, &out_bytes,
		    &reconnects);
	return reconnects;
}

/* A check is due every RELAY_STREAM_CHECK_INTERVAL, and before anything more is claimed after a
 * NATS reconnect (the server may have restarted from a store that lost its tail), a new leadership,
 * a stream the relay created, or PubAcks that went back. It needs NATS; without it the claim path
 * waits anyway. */
static bool
relay_check_due(struct relay *r)
{
	if (!natsconn_ok(r->nc))
		return false;
	if (nats_reconnects(r) != r->reconnects)
		r->check_now = true;
	return r->check_now || mono_ms() >= r->check_due_ms;
}

/* Says what the check found beyond the restore itself: rows held back for the duplicate window,
 * a gap no kept row can fill, a sealed stream. */
static void
check_report(struct relay *r, const struct stream_look *look, const struct watch_verdict *v,
    const struct retained_restore *res)
{
	uint64_t first, last;

	if (res->held > 0 && r->held_first != look->first_seq) {
		r->held_first = look->first_seq;
		log_warnx("stream \"%s\" no longer holds %ld kept events below its first sequence %"
		    PRIu64 " (purged): they are published again in %.0fs, once its duplicate window "
		    "(%" PRId64 "ms) has passed for them, as until then JetStream drops them as copies of "
		    "the purged messages", EVENT_STREAM, res->held, look->first_seq, res->held_s,
		    look->duplicates_ms);
	}
	if (watch_gap(v, res->kept_min, &first, &last)) {
		r->gap_events += (double)(last - first + 1);
		metrics_set(r->m_gap, r->gap_events);
		log_error("stream \"%s\" lost the events at sequences %" PRIu64 "-%" PRIu64 " (%" PRIu64
		    " events), older than every row the outbox keeps (RELAY_RETAIN %ldms): they cannot be "
		    "published again; run `outbox-relay snapshot` to publish every user's current state",
		    EVENT_STREAM, first, last, last - first + 1, r->s->retain_ms);
	}
	if (look->sealed && !r->sealed)
		log_error("stream \"%s\" is sealed: it takes no more events, which wait in the outbox "
		    "until it is replaced (deleted, the relay creates it anew and publishes every kept "
		    "row again)", EVENT_STREAM);
	r->sealed = look->sealed;
}

/* Compares the stream with what the relay knows was acknowledged; sets waiting again the kept rows
 * the stream lost (the claims then publish them, oldest first, with their event ids), reports what
 * no kept row can restore, and records what it saw. The pipeline is drained first, so that the
 * marks in PostgreSQL and the PubAcks seen are all there is in flight.
 *
 * What the relay knows survives it: the stream's creation time, first sequence and highest
 * acknowledged sequence are recorded in outbox_stream at every check, and every kept row carries
 * the sequence of its PubAck. */
static struct step
relay_check(struct relay *r)
{
	struct slot *s = &r->slots[r->next];
	struct stream_look look;
	struct retained_view view;
	struct watch_known known;
	struct watch_seen seen;
	struct watch_verdict v;
	struct retained_restore res;
	char err[512], note[1024], why[256];
	uint64_t reconnects;
	struct step st;
	bool warn, created;

	if (relay_drain(r) != 0)
		return step_failed;
	if ((st = relay_connect(r, s)).kind != STEP_CONTINUE || (st = relay_prepare(r)).kind !=
	    STEP_CONTINUE)
		return st;
	reconnects = nats_reconnects(r);
	if (stream_inspect(r->slots[0].js, r->s, &look, note, sizeof(note), &warn, err,
	    sizeof(err)) != 0)
		goto wait;
	if (note[0] != '\0')
		warn ? log_warnx("%s", note) : log_info("%s", note);
	if (look.created_now)
		r->stream_created = true;	/* remembered should this check fail below */
	if (retained_load(s->work, EVENT_STREAM, &view, err, sizeof(err)) != 0)
		goto wait;
	known.recorded = view.recorded;
	known.created_ns = view.created_ns;
	known.first_seq = view.first_seq;
	known.high_seq = view.high_seq;
	if (view.kept_max > known.high_seq)
		known.high_seq = view.kept_max;
	if (r->acks.high > known.high_seq)
		known.high_seq = r->acks.high;
	known.back_to = r->acks.back_low > 0 ? r->acks.back_low - 1 : 0;
	seen.created_now = r->stream_created;
	seen.created_ns = look.created_ns;
	seen.first_seq = look.first_seq;
	seen.last_seq = look.last_seq;
	seen.ages = look.max_age_ms > 0;
	watch_judge(&known, &seen, &v);
	if (v.reason == WATCH_RECREATED) {
		/* Someone else made it: bring its settings in line where that is safe, and say so. */
		if (stream_provision(r->slots[0].js, r->s, note, sizeof(note), &warn, &created, err,
		    sizeof(err)) != 0)
			goto wait;
		if (note[0] != '\0')
			warn ? log_warnx("%s", note) : log_info("%s", note);
	}
	if (retained_apply(s->work, EVENT_STREAM, &v, &seen, look.duplicates_ms, look.max_age_ms,
	    &res, err, sizeof(err)) != 0)
		goto wait;

	metrics_add(r->m_checks, 1);
	r->acks.high = v.high_seq;
	r->acks.back_low = 0;
	r->stream_created = false;
	r->check_now = false;
	r->reconnects = reconnects;
	r->check_due_ms = mono_ms() + r->s->stream_check_ms;
	if (res.restored > 0) {
		enum watch_reason reason = v.reason == WATCH_INTACT ? WATCH_PURGED : v.reason;

		watch_describe(&known, &seen, &v, why, sizeof(why));
		log_warnx("restored %ld events to stream \"%s\": %s; they are published again, oldest "
		    "first, with their event ids", res.restored, EVENT_STREAM, why);
		for (size_t i = 0; i < ARRAY_SIZE(restore_reasons); i++)
			if (restore_reasons[i] == reason)
				metrics_add(r->m_restores[i], 1);
		metrics_add(r->m_restored, (uint64_t)res.restored);
	}
	check_report(r, &look, &v, &res);
	return step_continue;
wait:
	log_warnx("%s; checking the stream again before relaying", err);
	set_problem(r, err);
	if (s->work != NULL && PQstatus(s->work) != CONNECTION_OK)
		slot_drop_work(s);
	return (struct step){ STEP_WAIT, backoff_next(&r->backoff) };
}

/* One step of the leader: publish one batch, and claim the next.
 *
 * With a batch in hand that was full (more rows wait) and more than one slot, the next claim is
 * sent to PostgreSQL first, then the batch in hand is published while PostgreSQL works, then the
 * claim is collected. The slot that claims holds the oldest batch in flight: its PubAcks have had
 * a whole step to come, and its marking and commit go in the same round trip as the claim. So
 * PostgreSQL claims and commits while the relay publishes and JetStream acknowledges.
 *
 * The claim made ahead starts right after the last id of the batch in hand (still locked, so
 * SKIP LOCKED would have to step over all its rows, and over the dead rows of the batch just
 * committed, which the open transactions keep PostgreSQL from pruning). A row committed late
 * with a lower id is picked up by the next claim from the oldest row: every
 * CLAIM_FROM_OLDEST_EVERY-th claim made ahead, and every claim after the pipeline ran dry.
 *
 * A partial batch means the outbox is (nearly) empty: everything in flight is finished and the
 * relay waits for the adaptive poll or a nudge, as without the pipeline.
 *
 * When a check of the stream is due, it comes first, with the pipeline drained (relay_check()). */
static struct step
relay_step(struct relay *r)
{
	struct slot *c, *t = NULL;
	struct step st;
	int64_t after;
	long n;

	if (relay_check_due(r) && (st = relay_check(r)).kind != STEP_CONTINUE)
		return st;
	if (r->held == NULL && (st = relay_claim_oldest(r)).kind != STEP_CONTINUE)
		return st;
	c = r->held;
	if (r->nslots > 1 && c->claimed >= r->s->batch_size) {
		t = &r->slots[r->next];
		if ((st = slot_ready(r, t, false)).kind != STEP_CONTINUE)
			return st;
		after = ++r->ahead_claims % CLAIM_FROM_OLDEST_EVERY == 0 ? 0 :
		    outbox_batch_last_id(c->batch);
		if (slot_claim(r, t, r->s->batch_size, after) != 0)
			return step_failed;
	}
	slot_publish(r, c);
	r->held = NULL;
	if (t == NULL)	/* without a pipeline: a full batch is finished before the slot claims */
		return c->claimed >= r->s->batch_size ? step_continue : relay_settle(r, c->claimed);
	if ((n = slot_collect(r, t)) < 0)
		return step_failed;
	if (n == 0)
		return relay_settle(r, 0);
	r->held = relay_advance(r);
	return step_continue;
}

/* Does what a step of the leader asked for. */
static void
relay_follow(struct relay *r, struct step st)
{
	switch (st.kind) {
	case STEP_CONTINUE:
		backoff_reset(&r->backoff);
		set_problem(r, "");
		r->poll_ms = 0;
		break;
	case STEP_IDLE:
		backoff_reset(&r->backoff);
		set_problem(r, "");
		if (st.wait_ms > 0)
			relay_wait(r, st.wait_ms);
		break;
	case STEP_FAILED:
	case STEP_WAIT:
		(void)relay_drain(r);
		r->poll_ms = 0;
		shutdown_sleep_ms(st.kind == STEP_FAILED ? backoff_next(&r->backoff) : st.wait_ms);
		break;
	}
}

void
relay_run(struct relay *r)
{
	char err[512];
	enum leader_result rc;

	while (!shutdown_requested()) {
		rc = leader_try_acquire(r->leader, err, sizeof(err));

		if (rc == LEADER_UNKNOWN) {
			atomic_store(&r->pg_ok, false);
			if (atomic_load(&r->role) == ROLE_LEADER) {
				log_warnx("%s; stopped relaying until the lock is taken again", err);
				relay_abandon(r);	/* their transactions end with them */
			} else {
				log_warnx("%s; retrying", err);
			}
			become(r, ROLE_ELECTING);
			set_problem(r, err);
			shutdown_sleep_ms(backoff_next(&r->backoff));
			continue;
		}
		atomic_store(&r->pg_ok, true);
		if (rc == LEADER_STANDBY) {
			relay_abandon(r);
			become(r, ROLE_STANDBY);
			set_problem(r, "");
			shutdown_sleep_ms(r->s->lock_poll_ms);
			continue;
		}
		become(r, ROLE_LEADER);
		relay_follow(r, relay_step(r));
	}
	/* The batches in flight are finished (committed when acknowledged) before the lock goes. */
	(void)relay_drain(r);
	if (atomic_load(&r->role) == ROLE_LEADER)
		log_info("giving up the leader lock");
	leader_release(r->leader);
	relay_abandon(r);
	metrics_set(r->m_leader, 0);
}

bool
relay_ready(void *arg, json_t **out)
{
	struct relay *r = arg;
	enum role role = (enum role)atomic_load(&r->role);
	bool nats = natsconn_ok(r->nc), pg = atomic_load(&r->pg_ok);
	char problem[256];
	bool ok;

	pthread_mutex_lock(&r->mu);
	snprintf(problem, sizeof(problem), "%s", r->problem);
	pthread_mutex_unlock(&r->mu);
	ok = pg && nats && role != ROLE_ELECTING && problem[0] == '\0';
	*out = json_pack("{s:s, s:s, s:s}",
	    "postgres", pg ? "ok" : "unreachable",
	    "nats", nats ? "ok" : "not connected",
	    "role", role == ROLE_LEADER ? "leader" : role == ROLE_STANDBY ? "standby" : "electing");
	if (problem[0] != '\0')
		json_object_set_new(*out, "problem", json_string(problem));
	return ok;
}
