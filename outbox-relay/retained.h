/* Published outbox rows kept for RELAY_RETAIN: what the relay records of the stream at each check,
 * the restore of what the stream lost, the sweep, and the gauges. Nothing here logs: each function
 * fills err and the relay decides what to say. Each runs on a connection with no transaction open
 * and leaves none open (a failed one is rolled back). */
#ifndef RELAY_RETAINED_H
#define RELAY_RETAINED_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "watch.h"

/* What PostgreSQL knows of the stream before a check. */
struct retained_view {
	bool recorded;		/* outbox_stream has the stream (a check was recorded before) */
	int64_t created_ns;	/* as recorded */
	uint64_t first_seq;	/* as recorded */
	uint64_t high_seq;	/* as recorded */
	uint64_t kept_max;	/* the highest stream sequence of a kept row (0: none kept) */
};

/* Reads the stream's recorded state and the highest sequence kept. Returns 0, or -1 with err
 * filled. */
int retained_load(PGconn *c, const char *stream, struct retained_view *out, char *err,
    size_t errlen) __attribute__((warn_unused_result));

/* What retained_apply() did. */
struct retained_restore {
	long restored;		/* kept rows set waiting again: the next claims publish them, oldest first */
	long held;		/* kept rows below the stream's first sequence not set waiting yet, because
				 * JetStream would still drop them as copies of the purged messages (it
				 * remembers their ids for its duplicate window after a purge) */
	double held_s;		/* seconds until the last of those can go */
	uint64_t kept_min;	/* the lowest sequence of a kept row in the verdict's lost range (0: none),
				 * for watch_gap() */
};

/* In one transaction: finds the lowest kept sequence in v's lost range, sets waiting again the kept
 * rows v selects, and records the stream's state (created_ns, first_seq, high_seq = v->high_seq,
 * checked_at = now, which lets the sweep go up to now). Rows below the first sequence are set
 * waiting only once duplicate_window_ms has passed since the newest of them was published, and
 * under a MaxAge (max_age_ms > 0) only those younger than it. Returns 0, or -1 with err filled
 * (rolled back: nothing changed). */
int retained_apply(PGconn *c, const char *stream, const struct watch_verdict *v,
    const struct watch_seen *s, long duplicate_window_ms, long max_age_ms,
    struct retained_restore *out, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Deletes up to limit published rows, oldest first, that were published more than retain_ms ago
 * and before the stream's last recorded check (so none is deleted that no check has seen in the
 * stream), in one statement of its own (a short transaction that skips rows locked elsewhere).
 * Returns the number deleted, or -1 with err filled. */
long retained_sweep(PGconn *c, const char *stream, long retain_ms, long limit, char *err,
    size_t errlen) __attribute__((warn_unused_result));

/* The outbox gauges. */
struct outbox_gauges {
	double waiting;		/* rows not published yet */
	double waiting_age_s;	/* age of the oldest of them (by id), 0 when none */
	double kept;		/* published rows kept */
	double kept_age_s;	/* time since the oldest of them was published, 0 when none */
};

/* Measures the gauges. Returns 0, or -1 with err filled. */
int retained_measure(PGconn *c, struct outbox_gauges *g, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
