/* Walks both sides in id order, gives what differs a second look, then reports and repairs it. */
#include "audit.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "progress.h"
#include "repair.h"
#include "users.h"
#include "util.h"

/* Users that differed at the first look and wait for their second: at most this many (48 bytes
 * each, about 5 MB); beyond it the pass waits for the oldest to be due before it reads on. */
#define SUSPECTS_MAX 100000
/* Drifted users logged one by one per pass; the rest are counted in the summary. stdout, when
 * it is the report, lists every one. */
#define LOG_LIMIT 100

struct suspect {
	struct user_pair first;	/* as the first look found it */
	int64_t seen_ms;
};

/* A user that still differed at the second look. */
struct finding {
	struct user_pair pair;
	enum drift_kind kind;
	enum drift_repair how;
	struct repair_item *item;	/* into pass.items, when --repair writes something */
};

struct pass {
	const struct audit_settings *s;
	const struct audit_options *o;
	struct users_db *db;
	struct copy *copy;
	struct audit_counts *c;
	struct progress *progress;
	size_t page;
	/* Buffers of one page each (pairs: two, one per side). */
	struct pg_user *pg;
	struct copy_doc *docs;
	struct user_pair *pairs;
	int64_t *ids;
	struct finding *found;
	struct repair_item *items;
	/* The suspects, oldest first: q[head] to q[head + n - 1]. */
	struct suspect *q;
	size_t head, n;
	uint64_t suspected;	/* all suspects of the pass, for the progress */
	uint64_t logged;
	char *err;
	size_t errlen;
};

uint64_t
audit_drift_total(const struct audit_counts *c)
{
	uint64_t n = 0;

	for (int k = DRIFT_NONE + 1; k < DRIFT_KINDS; k++)
		n += c->drift[k];
	return n;
}

static void
side_text(bool present, int64_t version, bool deleted, char *out, size_t outlen)
{
	if (!present)
		snprintf(out, outlen, "-");
	else
		snprintf(out, outlen, "%" PRId64 "%s", version, deleted ? ",deleted" : "");
}

/* Why a kind that the pipeline cannot produce happened, and what to do: for the error line. */
static void
log_impossible(const struct finding *f)
{
	const struct user_pair *p = &f->pair;
	const char *repair = f->how == REPAIR_SNAPSHOT ?
	    "audit --repair writes a user_snapshot of the row" :
	    "no event can repair it (the consumer ignores versions at or below its own): if "
	    "PostgreSQL is right, delete the document and run audit --repair (docs/audit.md)";

	if (f->kind == DRIFT_AHEAD)
		log_error("user %" PRId64 ": the copy is AHEAD of PostgreSQL (copy version %" PRId64
		    "%s, PostgreSQL version %" PRId64 "), which the pipeline cannot do: PostgreSQL lost "
		    "committed changes (restored from a backup?) or something other than the consumer "
		    "wrote the copy; %s", p->id, p->copy_version, p->copy_deleted ? ", a tombstone" : "",
		    p->pg_version, repair);
	else
		log_error("user %" PRId64 ": the copy holds a tombstone (version %" PRId64 ") of a user "
		    "alive in PostgreSQL (version %" PRId64 "), which the pipeline cannot do: only a "
		    "deletion, whose version is above every other, leaves a tombstone; %s", p->id,
		    p->copy_version, p->pg_version, repair);
}

/* One line per drifted user: on stdout for a pass run by hand (the report scripts read), on the
 * log for the periodic mode; the impossible kinds also as an error line on the log. */
static void
report(struct pass *p, const struct finding *f)
{
	char pgv[32], cpv[40], rep[40] = "", line[256];
	bool loud = f->kind == DRIFT_AHEAD || f->kind == DRIFT_DELETED_IN_COPY;

	side_text(f->pair.in_pg, f->pair.pg_version, false, pgv, sizeof(pgv));
	side_text(f->pair.in_copy, f->pair.copy_version, f->pair.copy_deleted, cpv, sizeof(cpv));
	if (p->o->repair)
		snprintf(rep, sizeof(rep), " repair=%s", f->item != NULL ?
		    repair_outcome_name(f->item) : "none");
	snprintf(line, sizeof(line), "%s user=%" PRId64 " postgres=%s copy=%s%s",
	    drift_kind_name(f->kind), f->pair.id, pgv, cpv, rep);
	progress_clear(p->progress);
	if (p->o->to_stdout) {
		printf("%s\n", line);
		fflush(stdout);
	}
	if (!loud && p->o->to_stdout)
		return;
	if (p->logged >= LOG_LIMIT) {
		p->c->not_logged++;
		return;
	}
	p->logged++;
	log_scope_set_int(LOG_ID_USER, f->pair.id);
	if (loud)
		log_impossible(f);
	else
		log_warnx("drift: %s", line);
	log_scope_clear();
}

/* Writes the repair events of the findings that have one, in one transaction. */
static int
repair(struct pass *p, struct finding *found, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		found[i].item = NULL;
		if (found[i].how == REPAIR_IMPOSSIBLE) {
			p->c->impossible++;
			continue;
		}
		if (!p->o->repair)
			continue;
		p->items[k] = (struct repair_item){ .id = found[i].pair.id, .how = found[i].how,
			.copy_version = found[i].pair.copy_version };
		found[i].item = &p->items[k++];
	}
	if (k == 0)
		return 0;
	if (repair_write(p->db, p->items, k, p->err, p->errlen) != 0)
		return -1;
	for (size_t i = 0; i < k; i++) {
		switch (p->items[i].outcome) {
		case REPAIR_WRITTEN:
			if (p->items[i].how == REPAIR_DELETE)
				p->c->written_deleted++;
			else
				p->c->written_snapshot++;
			break;
		case REPAIR_WAITING:
			p->c->waiting++;
			break;
		case REPAIR_CHANGED:
			p->c->changed++;
			break;
		}
	}
	return 0;
}

/* The second look at n suspects (ascending ids): the copy first, then PostgreSQL, as in the walk,
 * so that a change committed between the two reads can only make the copy look behind, never
 * ahead. Without AUDIT_RECHECK_AFTER the first look stands. What still differs is reported and
 * repaired. */
static int
look_again(struct pass *p, const struct suspect *sus, size_t n)
{
	size_t npairs = 0, nfound = 0, ndocs, npg, j = 0;

	if (p->s->recheck_ms > 0) {
		for (size_t i = 0; i < n; i++)
			p->ids[i] = sus[i].first.id;
		if (copy_get(p->copy, p->ids, n, p->docs, &ndocs, p->err, p->errlen) != 0 ||
		    users_db_get(p->db, p->ids, n, p->pg, &npg, p->err, p->errlen) != 0)
			return -1;
		npairs = pair_merge(p->pg, npg, p->docs, ndocs, INT64_MAX, p->pairs);
	}
	for (size_t i = 0; i < n; i++) {
		struct user_pair now = { .id = sus[i].first.id };	/* on neither side: settled */
		enum drift_kind kind;

		if (p->s->recheck_ms == 0) {
			now = sus[i].first;
		} else {
			while (j < npairs && p->pairs[j].id < now.id)
				j++;
			if (j < npairs && p->pairs[j].id == now.id)
				now = p->pairs[j];
		}
		if ((kind = drift_classify(&now)) == DRIFT_NONE) {
			p->c->settled++;
			log_debug("user %" PRId64 ": differed (%s), caught up at the second look", now.id,
			    drift_kind_name(drift_classify(&sus[i].first)));
			continue;
		}
		p->c->drift[kind]++;
		p->found[nfound++] = (struct finding){ .pair = now, .kind = kind,
			.how = drift_repair_for(&now, kind) };
	}
	if (repair(p, p->found, nfound) != 0)
		return -1;
	for (size_t i = 0; i < nfound; i++)
		report(p, &p->found[i]);
	return 0;
}

/* Gives the suspects their second look, a page at a time: a full page once its newest suspect has
 * waited AUDIT_RECHECK_AFTER; everything, waiting as needed, when all (the end of the walk) or
 * when the queue is full. Returns 0, -1 with err filled, or 1 when shutdown interrupted it. */
static int
settle(struct pass *p, bool all)
{
	while (p->n > 0) {
		size_t k = p->n < p->page ? p->n : p->page;
		const struct suspect *chunk = &p->q[p->head];
		int64_t wait = chunk[k - 1].seen_ms + p->s->recheck_ms - mono_ms();

		if (!all && p->n < SUSPECTS_MAX && p->s->recheck_ms > 0 && (k < p->page || wait > 0))
			break;
		if (wait > 0) {
			log_debug("users that differed: %zu, looking at them again in %" PRId64 "ms", k,
			    wait);
			if (shutdown_sleep_ms((long)wait))
				return 1;
		}
		if (look_again(p, chunk, k) != 0)
			return -1;
		p->head += k;
		p->n -= k;
	}
	if (p->n == 0)
		p->head = 0;
	return 0;
}

static void
suspect_add(struct pass *p, const struct user_pair *pair)
{
	/* The queue never holds more than SUSPECTS_MAX + a page: settle() empties it below that. */
	if (p->head + p->n == SUSPECTS_MAX + p->page) {
		memmove(p->q, p->q + p->head, p->n * sizeof(*p->q));
		p->head = 0;
	}
	p->q[p->head + p->n++] = (struct suspect){ *pair, mono_ms() };
	p->suspected++;
}

/* Reads both sides page by page and queues every user that differs. A page of the copy is read
 * first and bounds the page of PostgreSQL; the comparison covers the ids both have read in full.
 * Returns 0 at the end, -1 with err filled, 1 on shutdown. */
static int
walk(struct pass *p)
{
	int64_t after = 0;

	for (;;) {
		size_t ndocs, read, npg, npairs;
		int64_t last, copy_end, end;
		int rc;

		if (shutdown_requested())
			return 1;
		if (copy_page(p->copy, after, p->page, p->docs, &ndocs, &read, &last, p->err,
		    p->errlen) != 0)
			return -1;
		copy_end = page_end(read, p->page, last, INT64_MAX);
		if (users_db_page(p->db, after, copy_end, p->page, p->pg, &npg, p->err, p->errlen) != 0)
			return -1;
		end = page_end(npg, p->page, npg > 0 ? p->pg[npg - 1].id : 0, copy_end);
		if (end <= after) {
			snprintf(p->err, p->errlen, "could not read past _id %" PRId64 " in the copy: a "
			    "page of %zu documents whose _id is not a whole number", after, p->page);
			return -1;
		}
		npairs = pair_merge(p->pg, npg, p->docs, ndocs, end, p->pairs);
		for (size_t i = 0; i < npairs; i++) {
			const struct user_pair *pair = &p->pairs[i];

			p->c->compared++;
			p->c->pg_users += pair->in_pg;
			p->c->copy_docs += pair->in_copy;
			p->c->tombstones += pair->in_copy && pair->copy_deleted;
			if (drift_classify(pair) != DRIFT_NONE)
				suspect_add(p, pair);
		}
		if ((rc = settle(p, false)) != 0)
			return rc;
		progress_show(p->progress, end, p->c->compared, p->suspected);
		if (end == INT64_MAX)
			return settle(p, true);
		after = end;
	}
}

static void
pass_release(struct pass *p)
{
	progress_free(p->progress);
	users_db_close(p->db);
	/* Its log line about sessions (debug) comes before the summary. */
	copy_close(p->copy);
	free(p->pg);
	free(p->docs);
	free(p->pairs);
	free(p->ids);
	free(p->found);
	free(p->items);
	free(p->q);
}

/* The progress's 100 %: the highest id on either side. */
static int
progress_start(struct pass *p)
{
	int64_t pg_max, copy_max;

	if (!p->o->progress)
		return 0;
	if (users_db_max_id(p->db, &pg_max, p->err, p->errlen) != 0 ||
	    copy_max_id(p->copy, &copy_max, p->err, p->errlen) != 0)
		return -1;
	/* A bar to redraw is for a person at a terminal; LOG_FORMAT=json asks for lines to parse. */
	p->progress = progress_new(isatty(STDERR_FILENO) && p->s->log_format == LOG_FORMAT_TEXT,
	    p->s->progress_ms, pg_max > copy_max ? pg_max : copy_max);
	return 0;
}

enum audit_outcome
audit_pass(const struct audit_settings *s, const struct audit_options *o, struct audit_counts *c,
    char *err, size_t errlen)
{
	struct pass p = { .s = s, .o = o, .c = c, .page = (size_t)s->page_size, .err = err,
		.errlen = errlen };
	enum audit_outcome outcome = AUDIT_FAILED;
	int rc;

	memset(c, 0, sizeof(*c));
	p.pg = calloc(p.page, sizeof(*p.pg));
	p.docs = calloc(p.page, sizeof(*p.docs));
	p.pairs = calloc(2 * p.page, sizeof(*p.pairs));
	p.ids = calloc(p.page, sizeof(*p.ids));
	p.found = calloc(p.page, sizeof(*p.found));
	p.items = calloc(p.page, sizeof(*p.items));
	p.q = calloc(SUSPECTS_MAX + p.page, sizeof(*p.q));
	if (p.pg == NULL || p.docs == NULL || p.pairs == NULL || p.ids == NULL || p.found == NULL ||
	    p.items == NULL || p.q == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	/* MongoDB first: its client connects lazily, and a ping says plainly when it cannot. */
	if ((p.copy = copy_open(s->mongodb_uri, s->mongodb_db, s->collection, s->mongodb_timeout_ms,
	    err, errlen)) == NULL || copy_ping(p.copy, err, errlen) != 0 ||
	    (p.db = users_db_open(&s->pg, err, errlen)) == NULL)
		goto done;
	if (progress_start(&p) != 0)
		goto done;
	rc = walk(&p);
	if (rc == 0)
		outcome = audit_drift_total(c) > 0 ? AUDIT_DRIFT : AUDIT_CLEAN;
	else if (rc > 0)
		outcome = AUDIT_INTERRUPTED;
done:
	pass_release(&p);
	return outcome;
}

void
audit_summary(const struct audit_counts *c, const struct audit_options *o,
    enum audit_outcome outcome, int64_t ms, char *out, size_t outlen)
{
	uint64_t drift = audit_drift_total(c);
	size_t n;

	n = (size_t)snprintf(out, outlen, "audit %s: %" PRIu64 " users compared (%" PRIu64 " in "
	    "PostgreSQL, %" PRIu64 " in the copy of which %" PRIu64 " tombstones) in %.1fs: ",
	    outcome == AUDIT_INTERRUPTED ? "interrupted" : outcome == AUDIT_FAILED ? "failed" : "done",
	    c->compared, c->pg_users, c->copy_docs, c->tombstones, (double)ms / 1000.0);
	if (n >= outlen)
		return;
	if (outcome == AUDIT_INTERRUPTED || outcome == AUDIT_FAILED)
		n += (size_t)snprintf(out + n, outlen - n, "so far ");
	if (n >= outlen)
		return;
	if (drift == 0)
		n += (size_t)snprintf(out + n, outlen - n, "no drift");
	else
		n += (size_t)snprintf(out + n, outlen - n, "%" PRIu64 " differ (missing %" PRIu64
		    ", behind %" PRIu64 ", ahead %" PRIu64 ", deleted_in_postgres %" PRIu64
		    ", deleted_in_copy %" PRIu64 ", personal_data %" PRIu64 ")", drift,
		    c->drift[DRIFT_MISSING], c->drift[DRIFT_BEHIND], c->drift[DRIFT_AHEAD],
		    c->drift[DRIFT_DELETED_IN_POSTGRES], c->drift[DRIFT_DELETED_IN_COPY],
		    c->drift[DRIFT_PERSONAL_DATA]);
	if (n < outlen && c->settled > 0)
		n += (size_t)snprintf(out + n, outlen - n, "; %" PRIu64 " more differed at first and "
		    "caught up", c->settled);
	if (n < outlen && o->repair && drift > 0)
		n += (size_t)snprintf(out + n, outlen - n, "; repair: %" PRIu64 " events written (%"
		    PRIu64 " user_snapshot, %" PRIu64 " user_deleted), %" PRIu64 " already waiting in "
		    "the outbox, %" PRIu64 " changed meanwhile, %" PRIu64 " not repairable by an event",
		    c->written_snapshot + c->written_deleted, c->written_snapshot, c->written_deleted,
		    c->waiting, c->changed, c->impossible);
	else if (n < outlen && c->impossible > 0)
		n += (size_t)snprintf(out + n, outlen - n, "; %" PRIu64 " not repairable by an event",
		    c->impossible);
	if (n < outlen && c->not_logged > 0)
		snprintf(out + n, outlen - n, " (%" PRIu64 " drifted users past the first %d not "
		    "logged one by one)", c->not_logged, LOG_LIMIT);
}
