/* --repair: the current state of drifted users written to the outbox as events, so that the relay
 * and the consumer carry them as any other: deduplicated by event id, applied by version. */
#ifndef AUDIT_REPAIR_H
#define AUDIT_REPAIR_H

#include <stddef.h>
#include <stdint.h>

#include "compare.h"
#include "users.h"

/* What became of one user's repair. */
enum repair_outcome {
	REPAIR_WRITTEN,		/* its event is in the outbox */
	REPAIR_WAITING,		/* a row of the user at or above that version already waits in the
				 * outbox (outbox_pending): the relay carries it, nothing written */
	REPAIR_CHANGED,		/* the user is no longer what the audit saw (a user to snapshot was
				 * deleted meanwhile): nothing written; the next audit looks again */
};

struct repair_item {
	int64_t id;
	enum drift_repair how;		/* REPAIR_SNAPSHOT or REPAIR_DELETE */
	int64_t copy_version;		/* REPAIR_DELETE: the event is this version + 1 */
	enum repair_outcome outcome;	/* set by repair_write() */
	int64_t version;		/* set: the event's version (written or waiting) */
};

/* The outcome's name as printed ("user_snapshot" or "user_deleted" for a written event, "waiting",
 * "changed"). Static text. */
const char *repair_outcome_name(const struct repair_item *it);

/* Writes the events of the n items (ascending ids) in one transaction, as outbox-relay snapshot
 * writes its batches: a user_snapshot of the user's row as it is now, read FOR SHARE so that an
 * update of the same user waits and its own event follows; a user_deleted at the copy's version
 * + 1, without name or email, for a user gone from PostgreSQL. Sets each item's outcome. Returns
 * 0, or -1 with err filled and the transaction rolled back (nothing written). */
int repair_write(struct users_db *db, struct repair_item *items, size_t n, char *err,
    size_t errlen) __attribute__((warn_unused_result));

#endif
