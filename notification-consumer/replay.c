/* Replays USER_EVENTS into the copy: the same version-guarded apply as the live consumer, so it is
 * safe next to it, each user's versions in order where the stream holds them, with a progress bar
 * on a terminal and progress lines otherwise. */
#include "replay.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "applier.h"
#include "config.h"
#include "event.h"
#include "lease.h"
#include "log.h"
#include "natsconn.h"
#include "settings.h"
#include "util.h"

struct replay_counts {
	uint64_t read, applied, stale, dead, gaps;
};

/* What one pass needs besides the store it fills. */
struct replay {
	natsConnection *nc;
	jsCtx *js;
	const struct consumer_settings *cfg;
	struct replay_counts *c;
	int64_t announced_ms;	/* monotonic time of the last announcement; 0: none yet */
};

/* A replay writes the live collections next to the live consumer: it announces itself, so that
 * the live consumer reads its recent writes back meanwhile (see lease_announce_writer()). Each
 * announcement covers the next ANNOUNCE_FOR_MS and is renewed every ANNOUNCE_EVERY_MS. */
#define ANNOUNCE_FOR_MS 20000
#define ANNOUNCE_EVERY_MS 5000

/* Announces this replay as a writer until ANNOUNCE_FOR_MS from now (or until now, when ending),
 * at most every ANNOUNCE_EVERY_MS unless ending. */
static void
announce(struct replay *rp, bool ending)
{
	char err[512];

	if (!ending && rp->announced_ms != 0 && mono_ms() - rp->announced_ms < ANNOUNCE_EVERY_MS)
		return;
	rp->announced_ms = mono_ms();
	if (lease_announce_writer(rp->js, rp->cfg->durable, wall_us() +
	    (ending ? 0 : (int64_t)ANNOUNCE_FOR_MS * 1000), rp->cfg->nats_timeout_ms, err,
	    sizeof(err)) != 0)
		log_debug("replay: %s", err);
}

/* An event that came before a version of its user that the copy does not have: a replay reads
 * the stream once, so it waits in memory, not in the stream. */
struct held {
	struct event ev;	/* owned */
	int64_t published_us;
	uint64_t seq;
};

/* The events a pass holds, in stream order, each at most CONSUMER_REPLAY_REORDER_WINDOW
 * sequences: a relay batch that failed half-way is republished whole (RELAY_BATCH_SIZE 1000, two
 * in flight), so a version republished behind a later one lands at most a couple of thousand
 * sequences after it. */
struct reorder {
	struct held *v;
	size_t n, cap;
	uint64_t window;	/* sequences an early event waits */
};

struct progress {
	bool tty;
	uint64_t first, last;	/* stream sequences the pass covers */
	int64_t last_print;
	long every_ms;		/* between lines when not on a terminal */
	const char *label;
};

static void
progress_show(struct progress *p, uint64_t seq, const struct replay_counts *c, bool final)
{
	double frac = 1.0;

	/* A bar on a terminal is redrawn ten times a second. */
	if (!final && mono_ms() - p->last_print < (p->tty ? 100 : p->every_ms))
		return;
	p->last_print = mono_ms();
	if (p->last > p->first && seq >= p->first)
		frac = (double)(seq - p->first + 1) / (double)(p->last - p->first + 1);
	if (frac > 1.0)
		frac = 1.0;
	if (p->tty) {
		char bar[41];
		int fill = (int)(frac * 40);

		for (int i = 0; i < 40; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[40] = '\0';
		fprintf(stderr, "\r%s [%s] %3.0f%% seq %" PRIu64 "/%" PRIu64 " read %" PRIu64, p->label,
		    bar, frac * 100, seq, p->last, c->read);
		if (final)
			fputc('\n', stderr);
	} else {
		log_info("replay %s: %.0f%% seq %" PRIu64 " of %" PRIu64 ", read %" PRIu64 " applied %"
		    PRIu64 " stale %" PRIu64 " dead-lettered %" PRIu64, p->label, frac * 100, seq, p->last,
		    c->read, c->applied, c->stale, c->dead);
	}
}

/* Applies ev as order allows, retrying while MongoDB is down, and stores what it did in *r (never
 * COPY_STORE_ERROR); false when shutdown interrupted it first. */
static bool
apply_retrying(struct store *st, const struct consumer_settings *cfg, const struct event *ev,
    enum copy_store_order order, int64_t published_us, uint64_t seq, enum copy_store_result *r)
{
	struct backoff b;
	char err[512];

	backoff_init(&b, cfg->backoff_min_ms, cfg->backoff_max_ms);
	for (;;) {
		*r = store_apply(st, ev, order, published_us, seq, NULL, err, sizeof(err));
		if (*r != COPY_STORE_ERROR)
			return true;
		applier_log_scope(ev, NULL);
		log_warnx("replay: %s; retrying event=%s", err, ev->event_id);
		log_scope_clear();
		if (shutdown_sleep_ms(backoff_next(&b)))
			return false;
	}
}

static void
count(struct replay_counts *c, enum copy_store_result r)
{
	if (r == COPY_STORE_APPLIED)
		c->applied++;
	else if (r == COPY_STORE_STALE)
		c->stale++;
}

static void
held_remove(struct reorder *ro, size_t i)
{
	event_release(&ro->v[i].ev);
	memmove(ro->v + i, ro->v + i + 1, (ro->n - i - 1) * sizeof(*ro->v));
	ro->n--;
}

/* Applies the held events of user id that have become next in line, lowest version first. When
 * the lowest is still early it waits on, with the user's later ones, unless one of them has a
 * sequence below force_before (it waited its window, or the pass is over): then the lowest is
 * applied over the gap, never a higher one before it. False on shutdown. */
static bool
settle(const struct replay *rp, struct store *st, struct reorder *ro, int64_t id,
    uint64_t force_before)
{
	struct replay_counts *c = rp->c;

	for (;;) {
		size_t low = ro->n;
		bool due = false;
		enum copy_store_result r;
		struct held *h;

		for (size_t i = 0; i < ro->n; i++) {
			if (ro->v[i].ev.user_id != id)
				continue;
			if (low == ro->n || ro->v[i].ev.version < ro->v[low].ev.version)
				low = i;
			due = due || ro->v[i].seq < force_before;
		}
		if (low == ro->n)
			return true;
		h = &ro->v[low];
		if (!apply_retrying(st, rp->cfg, &h->ev, COPY_STORE_IN_ORDER, h->published_us, h->seq,
		    &r))
			return false;
		if (r == COPY_STORE_EARLY) {
			if (!due)
				return true;
			if (!apply_retrying(st, rp->cfg, &h->ev, COPY_STORE_OVER_GAP, h->published_us,
			    h->seq, &r))
				return false;
			if (r == COPY_STORE_APPLIED) {
				c->gaps++;
				applier_log_scope(&h->ev, NULL);
				log_debug("replay: user=%" PRId64 " version=%" PRId64 " applied over a gap "
				    "seq=%" PRIu64 " event=%s", id, h->ev.version, h->seq, h->ev.event_id);
				log_scope_clear();
			}
		}
		count(c, r);
		held_remove(ro, low);
	}
}

/* Applies one message, retrying while MongoDB is down, and what it let through of the held
 * ones; holds it when a version before it is missing. False on shutdown. */
static bool
replay_one(const struct replay *rp, struct store *st, struct reorder *ro, natsMsg *m,
    const struct js_meta *meta)
{
	struct replay_counts *c = rp->c;
	struct event ev;
	enum copy_store_result r;
	char err[512];

	c->read++;
	if (applier_decode(m, &ev, err, sizeof(err)) != 0) {
		/* The live consumer dead-letters it; replay only skips it. */
		c->dead++;
		log_warnx("replay: poison seq=%" PRIu64 " skipped: %s", meta->stream_seq, err);
		return true;
	}
	if (!apply_retrying(st, rp->cfg, &ev, COPY_STORE_IN_ORDER, meta->timestamp_ns / 1000,
	    meta->stream_seq, &r)) {
		event_release(&ev);
		return false;
	}
	if (r == COPY_STORE_EARLY) {
		if (ro->n == ro->cap) {
			size_t cap = ro->cap ? ro->cap * 2 : 64;
			struct held *bigger = realloc(ro->v, cap * sizeof(*bigger));

			if (bigger == NULL) {
				/* Not held, then: in stream order, over the gap. */
				bool ok = apply_retrying(st, rp->cfg, &ev, COPY_STORE_OVER_GAP,
				    meta->timestamp_ns / 1000, meta->stream_seq, &r);

				if (ok && r == COPY_STORE_APPLIED)
					c->gaps++;
				if (ok)
					count(c, r);
				event_release(&ev);
				return ok;
			}
			ro->v = bigger;
			ro->cap = cap;
		}
		ro->v[ro->n++] = (struct held){ ev, meta->timestamp_ns / 1000, meta->stream_seq };
		return true;
	}
	count(c, r);
	if (r == COPY_STORE_APPLIED && !settle(rp, st, ro, ev.user_id, 0)) {
		event_release(&ev);
		return false;
	}
	event_release(&ev);
	/* Held events that waited their window, oldest first. */
	while (ro->n > 0 && ro->v[0].seq + ro->window <= meta->stream_seq)
		if (!settle(rp, st, ro, ro->v[0].ev.user_id, meta->stream_seq - ro->window + 1))
			return false;
	return true;
}

/* At the end of a pass nothing more comes: every held event is applied, over its gap if need
 * be. False on shutdown. */
static bool
flush_held(const struct replay *rp, struct store *st, struct reorder *ro)
{
	while (ro->n > 0)
		if (!settle(rp, st, ro, ro->v[0].ev.user_id, UINT64_MAX))
			return false;
	return true;
}

static void
reorder_release(struct reorder *ro)
{
	for (size_t i = 0; i < ro->n; i++)
		event_release(&ro->v[i].ev);
	free(ro->v);
}

/* One pass over the stream from start up to sequence until, into st. */
static int
replay_pass(struct replay *rp, struct store *st, const struct js_start *start,
    uint64_t until, const char *label)
{
	const struct consumer_settings *cfg = rp->cfg;
	natsMsg **msgs = NULL;
	/* A bar to redraw is for a person at a terminal; LOG_FORMAT=json asks for lines to parse. */
	struct progress pg = { .tty = isatty(2) && cfg->log_format == LOG_FORMAT_TEXT, .first = start->seq ? start->seq : 1, .last = until,
	    .every_ms = cfg->replay_progress_ms, .label = label };
	struct js_pull *pull = NULL;
	struct reorder ro = { NULL, 0, 0, (uint64_t)cfg->replay_reorder_seqs };
	struct backoff b;
	uint64_t seq = 0;
	char name[128] = "", err[512];
	int rc = -1;

	if (until == 0 || (start->seq > until)) {
		progress_show(&pg, until, rp->c, true);
		return 0;
	}
	if ((msgs = calloc((size_t)cfg->replay_batch, sizeof(*msgs))) == NULL) {
		log_warnx("replay: out of memory");
		return -1;
	}
	if (js_ephemeral_new(rp->js, cfg->stream, start, name, sizeof(name), err, sizeof(err)) != 0) {
		log_warnx("replay: %s", err);
		free(msgs);
		return -1;
	}
	pull = js_pull_new(rp->nc, cfg->stream, name, err, sizeof(err));
	if (pull == NULL) {
		log_warnx("replay: %s", err);
		goto out;
	}
	backoff_init(&b, cfg->backoff_min_ms, cfg->backoff_max_ms);
	while (seq < until) {
		natsMsg *last = NULL;
		enum js_result fetched;
		bool stop = false;
		int n;

		/* Before the fetch: a fetched batch is always handled or handed back below. */
		if (shutdown_requested()) {
			log_warnx("replay: interrupted at seq %" PRIu64, seq);
			goto out;
		}
		fetched = js_pull_fetch(pull, msgs, (int)cfg->replay_batch, cfg->fetch_expiry_ms, &n,
		    err, sizeof(err));
		if (fetched == JS_CONSUMER_GONE) {
			log_warnx("replay: %s", err);
			goto out;
		}
		if (fetched == JS_FAILED) {
			log_warnx("replay: %s", err);
			if (shutdown_sleep_ms(backoff_next(&b)))
				goto out;
			continue;
		}
		backoff_reset(&b);
		if (n == 0) {
			uint64_t pending;
			int64_t ack_pending;

			/* Nothing left before until (e.g. a start time after the last event). */
			if (js_consumer_lag(rp->js, cfg->stream, name, &pending, &ack_pending, err,
			    sizeof(err)) == JS_OK && pending == 0)
				break;
			continue;
		}
		for (int i = 0; i < n; i++) {
			struct js_meta meta;

			if (stop || !js_meta_parse(natsMsg_GetReply(msgs[i]), &meta))
				continue;
			if (meta.stream_seq > until) {
				stop = true;
				continue;
			}
			if (pg.first == 1 && start->seq == 0 && seq == 0)
				pg.first = meta.stream_seq;
			if (!replay_one(rp, st, &ro, msgs[i], &meta)) {
				stop = true;
				continue;
			}
			seq = meta.stream_seq;
			last = msgs[i];
		}
		if (last != NULL && js_ack_sync(rp->nc, last, cfg->nats_timeout_ms, err,
		    sizeof(err)) != 0)
			log_debug("replay: %s", err);
		for (int i = 0; i < n; i++)
			natsMsg_Destroy(msgs[i]);
		announce(rp, false);
		if (seq < until)
			progress_show(&pg, seq, rp->c, false);
		if (shutdown_requested()) {
			log_warnx("replay: interrupted at seq %" PRIu64, seq);
			goto out;
		}
		if (stop)
			break;
	}
	if (!flush_held(rp, st, &ro)) {
		log_warnx("replay: interrupted at seq %" PRIu64, seq);
		goto out;
	}
	progress_show(&pg, until, rp->c, true);
	rc = 0;
out:
	reorder_release(&ro);
	js_pull_free(pull);
	js_consumer_delete(rp->js, cfg->stream, name);
	free(msgs);
	return rc;
}

static int
usage(void)
{
	fprintf(stderr, "usage: notification-consumer replay [--from-seq N | --from-time RFC3339] "
	    "[--fresh]\n");
	return 2;
}

int
replay_parse_args(int argc, char **argv, struct replay_options *o)
{
	*o = (struct replay_options){ { 0, 0 }, false };
	/* --help anywhere wins over whatever else is there. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("Usage: notification-consumer replay [--from-seq N | --from-time RFC3339] "
			    "[--fresh]\n\n"
			    "Rebuilds the copy from the stream with an ephemeral consumer of its own, up to the\n"
			    "stream's last sequence at the start, with the live consumer's version-guarded\n"
			    "apply (safe next to it). From the first event unless --from-seq or --from-time;\n"
			    "--fresh fills a new collection and merges it into the live one at the end, a\n"
			    "document at a time (readers never see a user missing). Exit status 0, 1 on\n"
			    "failure, 2 for bad arguments. Settings come from the environment: see\n"
			    "notification-consumer --help.\n");
			return 0;
		}
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--fresh") == 0) {
			o->fresh = true;
		} else if (strcmp(argv[i], "--from-seq") == 0 && i + 1 < argc) {
			long v;

			if (config_parse_long(argv[++i], 1, INT64_MAX, &v) != 0) {
				fprintf(stderr, "replay: --from-seq \"%s\" is not a positive sequence\n", argv[i]);
				return 2;
			}
			o->start.seq = (uint64_t)v;
		} else if (strcmp(argv[i], "--from-time") == 0 && i + 1 < argc) {
			int64_t us;

			if (!rfc3339_parse(argv[++i], &us) || us <= 0 || us > INT64_MAX / 1000) {
				fprintf(stderr, "replay: --from-time \"%s\" is not an RFC 3339 time between "
				    "1970 and 2262\n", argv[i]);
				return 2;
			}
			o->start.time_ns = us * 1000;
		} else {
			return usage();
		}
	}
	if (o->start.seq > 0 && o->start.time_ns > 0)
		return usage();
	return -1;
}

int
replay_run(natsConnection *nc, struct store *live, const struct consumer_settings *cfg,
    const struct replay_options *o)
{
	struct replay_counts c = { 0, 0, 0, 0, 0 };
	struct replay rp = { nc, NULL, cfg, &c, 0 };
	struct store *fresh = NULL;
	char coll[256], err[512];
	uint64_t first = 0, until = 0, until2 = 0;
	char shown[512], summary[256];
	int64_t began = mono_ms(), deadline;
	jsOptions jo;
	int rc = 1;

	deadline = mono_ms() + cfg->replay_connect_timeout_ms;
	while (!natsconn_ok(nc)) {
		if (mono_ms() >= deadline || shutdown_sleep_ms(100)) {
			config_url_redact(cfg->nats.url, shown, sizeof(shown));
			log_error("replay: could not connect to NATS at \"%s\"", shown);
			return 1;
		}
	}
	jsOptions_Init(&jo);
	jo.Wait = cfg->nats_timeout_ms;
	if (natsConnection_JetStream(&rp.js, nc, &jo) != NATS_OK) {
		log_error("replay: could not open a JetStream context");
		return 1;
	}
	if (store_ping(live, err, sizeof(err)) != 0 || store_prepare(live, err, sizeof(err)) != 0) {
		log_error("replay: %s", err);
		goto out;
	}
	announce(&rp, false);
	if (js_stream_seqs(rp.js, cfg->stream, &first, &until, err, sizeof(err)) != 0) {
		log_error("replay: %s", err);
		goto out;
	}
	log_info("replay: %s up to seq %" PRIu64 " into %s", cfg->stream, until,
	    o->fresh ? "a fresh collection" : "the live collections");
	if (o->fresh) {
		/* Only the users' documents are rebuilt aside: the history is append-only with a unique
		 * event id, so the pass adds what is missing in place, and the merge can never drop an
		 * entry the live consumer wrote meanwhile. */
		struct store_config sc = cfg->store;

		snprintf(coll, sizeof(coll), "%s_replay", cfg->store.collection);
		sc.collection = coll;
		sc.appname = "notification-consumer-replay";
		sc.instance = store_instance(live);
		fresh = store_new(&sc, err, sizeof(err));
		/* Its history is the live one, whose indexes store_prepare(live) made above. */
		if (fresh == NULL || store_drop(fresh, coll, err, sizeof(err)) != 0) {
			log_error("replay: %s", err);
			goto out;
		}
		if (replay_pass(&rp, fresh, &o->start, until, "fresh") != 0)
			goto out;
		/* A stream that no longer holds its first events (RELAY_STREAM_MAX_AGE, a purge) did
		 * not show the pass every user: a document the fresh collection lacks is then kept
		 * as it is, not removed. */
		if (first > 1)
			log_info("replay: the stream starts at seq %" PRIu64 " (older events left it): "
			    "documents of users without an event in it are kept as they are", first);
		if (store_merge(fresh, coll, cfg->store.collection, until, first <= 1, err,
		    sizeof(err)) != 0) {
			log_error("replay: %s", err);
			goto out;
		}
		log_info("replay: fresh collection merged into the live one");
		/* Events the live consumer applied to the old collections while the pass ran. */
		if (js_stream_seqs(rp.js, cfg->stream, NULL, &until2, err, sizeof(err)) != 0) {
			log_error("replay: %s", err);
			goto out;
		}
		if (until2 > until) {
			struct js_start catchup = { until + 1, 0 };

			if (replay_pass(&rp, live, &catchup, until2, "catch-up") != 0)
				goto out;
		}
	} else if (replay_pass(&rp, live, &o->start, until, "live") != 0) {
		goto out;
	}
	rc = 0;
out:
	if (c.gaps > 0)
		log_info("replay: %" PRIu64 " events applied over a gap: the stream did not hold the "
		    "versions before them (a replay from the middle of the history, or events "
		    "dead-lettered or past the stream's retention)", c.gaps);
	snprintf(summary, sizeof(summary), "replay %s: read %" PRIu64 ", applied %" PRIu64 ", stale %"
	    PRIu64 ", dead-lettered %" PRIu64 " in %.1fs", rc == 0 ? "done" : "failed", c.read,
	    c.applied, c.stale, c.dead, (double)(mono_ms() - began) / 1000.0);
	/* For the person who ran it, as it is; with LOG_FORMAT=json a line of the log like any. */
	if (cfg->log_format == LOG_FORMAT_JSON)
		log_info("%s", summary);
	else
		fprintf(stderr, "%s\n", summary);
	if (rp.announced_ms != 0)
		announce(&rp, true);
	store_free(fresh);
	jsCtx_Destroy(rp.js);
	return rc;
}
