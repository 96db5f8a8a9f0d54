/* One audit pass: both sides read page by page in id order, every user that differs looked at
 * again a little later, what still differs reported and, with --repair, its events written. */
#ifndef AUDIT_AUDIT_H
#define AUDIT_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compare.h"
#include "copy.h"
#include "settings.h"

struct audit_counts {
	uint64_t compared;		/* users found on either side */
	uint64_t pg_users;		/* of them in PostgreSQL */
	uint64_t copy_docs;		/* of them with a document in the copy, tombstones included */
	uint64_t tombstones;
	uint64_t drift[DRIFT_KINDS];	/* users that still differed at the second look, by kind */
	uint64_t settled;		/* users that differed at the first look and not at the second */
	uint64_t written_snapshot;	/* --repair: user_snapshot events written */
	uint64_t written_deleted;	/* --repair: user_deleted events written */
	uint64_t waiting;		/* --repair: nothing written, the outbox already holds it */
	uint64_t changed;		/* --repair: nothing written, the user changed meanwhile */
	uint64_t impossible;		/* drifted users no event can repair (ahead, same-version tombstone) */
	uint64_t not_logged;		/* drifted users past the log's limit (not logged one by one) */
};

enum audit_outcome {
	AUDIT_CLEAN,		/* every user compared, none differs */
	AUDIT_DRIFT,		/* every user compared, some differ */
	AUDIT_FAILED,		/* a store could not be reached or read: err says which and why */
	AUDIT_INTERRUPTED,	/* shutdown was requested before the end */
};

struct audit_options {
	bool repair;		/* write the repair events */
	bool to_stdout;		/* one line per drifted user on stdout (else on the log) */
	bool progress;		/* show the progress on stderr */
};

/* Runs one pass over PostgreSQL and the copy, each through a connection of its own that the pass
 * opens and closes (a pass of --every finds a store that came back), counting into *c (zeroed
 * first). Reads hold no lock; only --repair's writes take FOR SHARE row locks, one short
 * transaction per page of drifted users. On AUDIT_FAILED err says why, without a password. */
enum audit_outcome audit_pass(const struct audit_settings *s, const struct audit_options *o,
    struct audit_counts *c, char *err, size_t errlen);

/* The users that differ, all kinds together. */
uint64_t audit_drift_total(const struct audit_counts *c);

/* The summary line of a pass that took ms milliseconds, without a newline. */
void audit_summary(const struct audit_counts *c, const struct audit_options *o,
    enum audit_outcome outcome, int64_t ms, char *out, size_t outlen);

#endif
