/* Runs audit passes at an interval and publishes their results as metrics and readiness. */
#include "periodic.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "audit.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

enum last_run { LAST_NONE, LAST_CLEAN, LAST_DRIFT, LAST_FAILED };

struct periodic {
	const struct audit_settings *s;
	struct metrics_series *drift[DRIFT_KINDS];
	struct metrics_series *runs_clean, *runs_drift, *runs_failed;
	struct metrics_series *last_ts, *last_duration, *compared, *settled;
	struct metrics_series *written_snapshot, *written_deleted;
	pthread_mutex_t lock;		/* guards last and problem, read by /readyz */
	enum last_run last;
	char problem[512];
};

struct periodic *
periodic_new(const struct audit_settings *s)
{
	struct periodic *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->s = s;
	pthread_mutex_init(&p->lock, NULL);
	for (int k = DRIFT_NONE + 1; k < DRIFT_KINDS; k++) {
		p->drift[k] = metrics_gauge("audit_drift_users", "Users that differed between "
		    "PostgreSQL and the copy at the end of the last complete pass, by kind",
		    "kind", drift_kind_name((enum drift_kind)k), NULL);
		metrics_set(p->drift[k], 0);
	}
	p->runs_clean = metrics_counter("audit_runs_total", "Audit passes, by result",
	    "result", "clean", NULL);
	p->runs_drift = metrics_counter("audit_runs_total", "Audit passes, by result",
	    "result", "drift", NULL);
	p->runs_failed = metrics_counter("audit_runs_total", "Audit passes, by result",
	    "result", "failed", NULL);
	p->last_ts = metrics_gauge("audit_last_run_timestamp_seconds", "When the last complete pass "
	    "ended (Unix time; a pass that could not reach a store does not count)", NULL);
	p->last_duration = metrics_gauge("audit_last_run_duration_seconds", "How long the last "
	    "complete pass took", NULL);
	p->compared = metrics_gauge("audit_users_compared", "Users compared by the last complete pass",
	    NULL);
	p->settled = metrics_gauge("audit_users_caught_up", "Users of the last complete pass that "
	    "differed at the first look and not at the second (events on their way)", NULL);
	p->written_snapshot = metrics_counter("audit_repair_events_total", "Events written to the "
	    "outbox by --repair, by type", "type", "user_snapshot", NULL);
	p->written_deleted = metrics_counter("audit_repair_events_total", "Events written to the "
	    "outbox by --repair, by type", "type", "user_deleted", NULL);
	return p;
}

void
periodic_free(struct periodic *p)
{
	if (p == NULL)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p);
}

bool
periodic_ready(void *arg, json_t **out)
{
	static const char *const names[] = { "none yet", "clean", "drift", "failed" };
	struct periodic *p = arg;
	bool ready;

	pthread_mutex_lock(&p->lock);
	ready = p->last == LAST_CLEAN || p->last == LAST_DRIFT;
	*out = json_pack("{s:s}", "last_run", names[p->last]);
	if (p->last == LAST_FAILED)
		json_object_set_new(*out, "problem", json_string(p->problem));
	pthread_mutex_unlock(&p->lock);
	return ready;
}

static void
record(struct periodic *p, enum audit_outcome outcome, const struct audit_counts *c, int64_t ms,
    const char *err)
{
	pthread_mutex_lock(&p->lock);
	if (outcome == AUDIT_FAILED) {
		p->last = LAST_FAILED;
		error_headline(err, p->problem, sizeof(p->problem));
	} else {
		p->last = outcome == AUDIT_DRIFT ? LAST_DRIFT : LAST_CLEAN;
	}
	pthread_mutex_unlock(&p->lock);
	if (outcome == AUDIT_FAILED) {
		metrics_add(p->runs_failed, 1);
		return;
	}
	metrics_add(outcome == AUDIT_DRIFT ? p->runs_drift : p->runs_clean, 1);
	for (int k = DRIFT_NONE + 1; k < DRIFT_KINDS; k++)
		metrics_set(p->drift[k], (double)c->drift[k]);
	metrics_set(p->last_ts, (double)wall_us() / 1e6);
	metrics_set(p->last_duration, (double)ms / 1000.0);
	metrics_set(p->compared, (double)c->compared);
	metrics_set(p->settled, (double)c->settled);
	metrics_add(p->written_snapshot, c->written_snapshot);
	metrics_add(p->written_deleted, c->written_deleted);
}

void
periodic_run(struct periodic *p)
{
	const struct audit_options o = { .repair = p->s->repair, .to_stdout = false,
		.progress = false };
	struct backoff retry;
	struct audit_counts c;
	char err[1024], summary[1024];
	int64_t next = mono_ms();

	backoff_init(&retry, 1000, p->s->every_ms);
	for (;;) {
		enum audit_outcome outcome;
		int64_t start, wait = next - mono_ms();

		if (wait > 0 && shutdown_sleep_ms((long)wait))
			return;
		if (shutdown_requested())
			return;
		start = mono_ms();
		outcome = audit_pass(p->s, &o, &c, err, sizeof(err));
		if (outcome == AUDIT_INTERRUPTED)
			return;
		record(p, outcome, &c, mono_ms() - start, err);
		audit_summary(&c, &o, outcome, mono_ms() - start, summary, sizeof(summary));
		if (outcome == AUDIT_FAILED) {
			long delay = backoff_next(&retry);

			log_error("%s; %s; next pass in %ldms", err, summary, delay);
			next = mono_ms() + delay;
			continue;
		}
		backoff_reset(&retry);
		if (outcome == AUDIT_DRIFT)
			log_warnx("%s", summary);
		else
			log_info("%s", summary);
		next = start + p->s->every_ms;
	}
}
