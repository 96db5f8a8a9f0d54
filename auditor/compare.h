/* What the auditor compares, and how: one user as PostgreSQL and the copy hold it, the kind of
 * drift it shows, the event that can repair it, and the merge of two pages read in id order.
 * Pure logic, no I/O. */
#ifndef AUDIT_COMPARE_H
#define AUDIT_COMPARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A row of users: a user alive in PostgreSQL. */
struct pg_user {
	int64_t id;
	int64_t version;
};

/* A document of the copy: _id is the user id; deleted marks a tombstone; personal: it holds a
 * name or an email (a tombstone must not: the consumer removes them with the deletion). */
struct copy_doc {
	int64_t id;
	int64_t version;
	bool deleted;
	bool personal;
};

/* One user on both sides. A user absent from users is deleted (or never existed: ids come from
 * an identity column and are never reused, so the two are the same for the copy). */
struct user_pair {
	int64_t id;
	bool in_pg, in_copy;
	int64_t pg_version;
	int64_t copy_version;
	bool copy_deleted;	/* the copy's document is a tombstone */
	bool copy_personal;	/* the copy's document holds a name or an email */
};

enum drift_kind {
	DRIFT_NONE,
	DRIFT_MISSING,			/* alive in PostgreSQL, no document */
	DRIFT_BEHIND,			/* alive on both sides, the copy's version older */
	DRIFT_AHEAD,			/* the copy's version newer than PostgreSQL's: impossible */
	DRIFT_DELETED_IN_POSTGRES,	/* gone from PostgreSQL, alive in the copy */
	DRIFT_DELETED_IN_COPY,		/* alive in PostgreSQL, a tombstone at or below its version */
	DRIFT_PERSONAL_DATA,		/* gone from PostgreSQL, a tombstone that still holds a name or
					 * an email (written before deletions removed them) */
};
#define DRIFT_KINDS 7

/* The kind's name as printed and as the metric's label ("missing", ...; "none"). Static text. */
const char *drift_kind_name(enum drift_kind k);
enum drift_kind drift_classify(const struct user_pair *p);

/* What --repair writes for a user that drifted. */
enum drift_repair {
	REPAIR_NONE,		/* no drift */
	REPAIR_SNAPSHOT,	/* a user_snapshot of the current row: the consumer applies it over any
				 * older version, or no document */
	REPAIR_DELETE,		/* a user_deleted at the copy's version + 1 */
	REPAIR_IMPOSSIBLE,	/* no event can: the consumer ignores every version at or below its own */
};
enum drift_repair drift_repair_for(const struct user_pair *p, enum drift_kind k);

/* Where a page of the comparison ends, given one side's page: got items were read with a limit of
 * limit, the last of them with id last. A full page ends at its last id (beyond it that side was
 * not read); a short one has read everything up to bound. */
int64_t page_end(size_t got, size_t limit, int64_t last, int64_t bound);

/* Pairs the users of pg (npg rows) and copy (ncopy documents), both in ascending id order without
 * an id twice, whose id is at most upto, in id order, into out (room for npg + ncopy). Returns
 * the number of pairs. */
size_t pair_merge(const struct pg_user *pg, size_t npg, const struct copy_doc *copy, size_t ncopy,
    int64_t upto, struct user_pair *out);

#endif
