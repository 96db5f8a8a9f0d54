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
#include "leader.h"
#include "log.h"
#include "metrics.h"
#include "natsconn.h"
#include "pg.h"
#include "stream.h"
#include "util.h"

#define NUDGE_SUBJECT "outbox.nudge"

enum role { ROLE_ELECTING, ROLE_STANDBY, ROLE_LEADER };

struct relay {
	const struct relay_settings *s;
	natsConnection *nc;
	jsCtx *js;
	natsSubscription *nudge;
	struct leader *leader;
	struct outbox_batch *batch;
	PGconn *work;			/* the leader's connection for claims and deletes */
	bool stream_ready;		/* provisioned since the last failure */
	int64_t backlog_due_ms;
	struct backoff backoff;

	pthread_mutex_t mu;		/* guards nudged and problem */
	pthread_cond_t cond;
	bool nudged;
	char problem[256];		/* why the relay cannot work right now, for /readyz */
	atomic_int role;
	atomic_bool pg_ok;

	struct metrics_series *m_leader, *m_backlog, *m_oldest, *m_published, *m_duplicates,
	    *m_failed, *m_batches_failed, *m_dead, *m_batch_size, *m_publish_seconds;
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
	r->batch = outbox_batch_new();
	r->leader = leader_new(&s->pg, "outbox-relay leader lock", s->lock_key);
	if (r->batch == NULL || r->leader == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	r->nc = natsconn_open(s->nats_url, "outbox-relay", err, errlen);
	if (r->nc == NULL)
		goto fail;
	jsOptions_Init(&jo);
	jo.Wait = s->publish_timeout_ms;
	outbox_batch_js_options(r->batch, &jo);
	st = natsConnection_JetStream(&r->js, r->nc, &jo);
	if (st == NATS_OK)
		st = natsConnection_Subscribe(&r->nudge, r->nc, NUDGE_SUBJECT, on_nudge, r);
	if (st != NATS_OK) {
		snprintf(err, errlen, "could not set up JetStream publishing: %s", natsStatus_GetText(st));
		goto fail;
	}

	r->m_leader = metrics_gauge("relay_leader", "1 while this relay holds the leader lock", NULL);
	r->m_backlog = metrics_gauge("relay_outbox_backlog", "Rows waiting in the outbox (refreshed "
	    "periodically by the leader)", NULL);
	r->m_oldest = metrics_gauge("relay_outbox_oldest_age_seconds", "Age of the oldest row waiting "
	    "in the outbox (refreshed periodically by the leader)", NULL);
	r->m_published = metrics_counter("relay_events_published_total", "Events acknowledged by "
	    "JetStream and removed from the outbox", NULL);
	r->m_duplicates = metrics_counter("relay_events_duplicate_total", "Events JetStream already "
	    "had (acknowledged as duplicates)", NULL);
	r->m_failed = metrics_counter("relay_events_failed_total", "Events without a positive PubAck "
	    "(left in the outbox and retried)", NULL);
	r->m_batches_failed = metrics_counter("relay_batches_failed_total", "Batches rolled back", NULL);
	r->m_dead = metrics_counter("relay_events_dead_total", "Events moved to outbox_dead because "
	    "they can never be published", NULL);
	r->m_batch_size = metrics_histogram("relay_batch_size", "Rows claimed per non-empty batch",
	    NULL, batch_bounds, ARRAY_SIZE(batch_bounds));
	r->m_publish_seconds = metrics_histogram("relay_publish_duration_seconds", "Time from the "
	    "first publish of a batch to its last PubAck", NULL, metrics_latency_bounds,
	    metrics_latency_nbounds);
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
	if (r->js != NULL)
		jsCtx_Destroy(r->js);
	if (r->nc != NULL) {
		natsConnection_Close(r->nc);
		natsConnection_Destroy(r->nc);
	}
	if (r->work != NULL)
		PQfinish(r->work);
	leader_free(r->leader);
	outbox_batch_free(r->batch);
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
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += left / 1000;
		ts.tv_nsec += (left % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&r->cond, &r->mu, &ts);
	}
	r->nudged = false;
	pthread_mutex_unlock(&r->mu);
}

static void
relay_fail_wait(struct relay *r)
{
	shutdown_sleep_ms(backoff_next(&r->backoff));
}

static void
become(struct relay *r, enum role role)
{
	enum role was = (enum role)atomic_exchange(&r->role, role);

	if (was == role)
		return;
	metrics_set(r->m_leader, role == ROLE_LEADER ? 1 : 0);
	if (role == ROLE_LEADER)
		log_info("became the leader: relaying the outbox");
	else if (role == ROLE_STANDBY)
		log_info("standing by: another relay holds the leader lock");
}

static void
drop_work(struct relay *r)
{
	if (r->work != NULL)
		PQfinish(r->work);
	r->work = NULL;
}

static void
backlog_refresh(struct relay *r)
{
	PGresult *res;

	if (mono_ms() < r->backlog_due_ms)
		return;
	r->backlog_due_ms = mono_ms() + r->s->backlog_interval_ms;
	res = PQexec(r->work, "SELECT count(*), COALESCE(extract(epoch FROM clock_timestamp() - "
	    "(SELECT created_at FROM outbox ORDER BY id LIMIT 1)), 0) FROM outbox");
	if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		metrics_set(r->m_backlog, strtod(PQgetvalue(res, 0, 0), NULL));
		metrics_set(r->m_oldest, strtod(PQgetvalue(res, 0, 1), NULL));
	} else {
		char msg[256];

		pg_error_text(r->work, res, msg, sizeof(msg));
		log_warnx("could not measure the outbox backlog: %s", msg);
		if (pg_connection_lost(r->work, res))
			drop_work(r);
	}
	PQclear(res);
}

/* One claim-publish-commit round. Returns the rows claimed, or -1 after a failure (rolled back). */
static long
relay_batch(struct relay *r)
{
	struct batch_result res;
	char err[512];
	long n, dead;

	n = outbox_batch_claim(r->batch, r->work, r->s->batch_size, err, sizeof(err));
	if (n < 0) {
		log_warnx("%s", err);
		goto fail_pg;
	}
	if (n == 0) {
		outbox_batch_rollback(r->batch, r->work);
		return 0;
	}
	dead = outbox_batch_bury(r->batch, r->work, natsConnection_GetMaxPayload(r->nc), err,
	    sizeof(err));
	if (dead < 0) {
		log_warnx("%s", err);
		outbox_batch_rollback(r->batch, r->work);
		goto fail_pg;
	}
	for (size_t i = 0; i < (size_t)dead; i++) {
		const char *subject, *event_id;
		size_t bytes;

		event_id = outbox_batch_dead_id(r->batch, i, &subject, &bytes);
		if (event_id != NULL)
			log_error("event %s: moved to outbox_dead: its %zu-byte body on \"%s\" is over the "
			    "server's maximum payload of %" PRId64 " bytes", event_id, bytes, subject,
			    natsConnection_GetMaxPayload(r->nc));
	}
	if (outbox_batch_publish(r->batch, r->js, r->s->publish_timeout_ms, err, sizeof(err)) != 0) {
		outbox_batch_result(r->batch, &res);
		outbox_batch_rollback(r->batch, r->work);
		log_warnx("%s; rolled back the batch of %zu (%zu acknowledged, %zu not), retrying", err,
		    res.claimed, res.acked, res.failed);
		metrics_add(r->m_failed, res.failed);
		metrics_add(r->m_batches_failed, 1);
		r->stream_ready = false;	/* the stream may be gone: look again */
		set_problem(r, err);
		return -1;
	}
	if (outbox_batch_commit(r->batch, r->work, err, sizeof(err)) != 0) {
		log_warnx("%s; the published events stay in the outbox and are republished "
		    "(JetStream drops the duplicates)", err);
		goto fail_pg;
	}
	outbox_batch_result(r->batch, &res);
	metrics_add(r->m_published, res.acked);
	metrics_add(r->m_duplicates, res.duplicates);
	metrics_add(r->m_dead, res.dead);
	metrics_observe(r->m_batch_size, (double)res.claimed);
	metrics_observe(r->m_publish_seconds, res.publish_seconds);
	log_debug("relayed %zu events (%zu duplicates, %zu dead) in %.3fs", res.acked, res.duplicates,
	    res.dead, res.publish_seconds);
	return n;
fail_pg:
	metrics_add(r->m_batches_failed, 1);
	set_problem(r, err);
	if (PQstatus(r->work) != CONNECTION_OK)
		drop_work(r);
	return -1;
}

/* Makes sure the leader has its work connection. Returns false (after logging and waiting) when
 * PostgreSQL cannot be reached. */
static bool
relay_connect(struct relay *r)
{
	char err[512];

	if (r->work != NULL)
		return true;
	r->work = pg_connect(&r->s->pg, "outbox-relay", err, sizeof(err));
	if (r->work == NULL) {
		atomic_store(&r->pg_ok, false);
		log_warnx("%s; retrying", err);
		set_problem(r, err);
		relay_fail_wait(r);
		return false;
	}
	return true;
}

/* Makes sure NATS is connected and the stream provisioned. Returns false (after logging and
 * waiting) when either is missing. */
static bool
relay_prepare(struct relay *r)
{
	char err[512], note[1024];
	bool warn;

	if (!natsconn_ok(r->nc)) {
		set_problem(r, "NATS is not connected; events wait in the outbox");
		shutdown_sleep_ms(200);
		return false;
	}
	if (!r->stream_ready) {
		if (stream_provision(r->js, r->s, note, sizeof(note), &warn, err, sizeof(err)) != 0) {
			log_warnx("%s; retrying", err);
			set_problem(r, err);
			relay_fail_wait(r);
			return false;
		}
		if (note[0] != '\0' && warn)
			log_warnx("%s", note);
		else if (note[0] != '\0')
			log_info("%s", note);
		r->stream_ready = true;
	}
	return true;
}

void
relay_run(struct relay *r)
{
	char err[512];
	long wait_ms = 0, n;
	int rc;

	while (!shutdown_requested()) {
		rc = leader_try_acquire(r->leader, err, sizeof(err));

		if (rc < 0) {
			atomic_store(&r->pg_ok, false);
			if (atomic_load(&r->role) == ROLE_LEADER) {
				log_warnx("%s; stopped relaying until the lock is taken again", err);
				drop_work(r);	/* its transaction, if any, ends with it */
			} else {
				log_warnx("%s; retrying", err);
			}
			become(r, ROLE_ELECTING);
			set_problem(r, err);
			relay_fail_wait(r);
			continue;
		}
		atomic_store(&r->pg_ok, true);
		if (rc == 0) {
			become(r, ROLE_STANDBY);
			set_problem(r, "");
			shutdown_sleep_ms(r->s->lock_poll_ms);
			continue;
		}
		become(r, ROLE_LEADER);
		if (!relay_connect(r))
			continue;
		/* Measured while NATS is away too: that is when the backlog grows. */
		backlog_refresh(r);
		if (r->work == NULL || !relay_prepare(r))
			continue;
		n = relay_batch(r);
		if (n < 0) {
			relay_fail_wait(r);
			wait_ms = 0;
			continue;
		}
		backoff_reset(&r->backoff);
		set_problem(r, "");
		wait_ms = relay_next_poll(wait_ms, n, r->s->batch_size, r->s->poll_min_ms,
		    r->s->poll_max_ms);
		if (wait_ms > 0)
			relay_wait(r, wait_ms);
	}
	if (atomic_load(&r->role) == ROLE_LEADER)
		log_info("giving up the leader lock");
	leader_release(r->leader);
	drop_work(r);
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
