/* Classifies a user's two sides into a kind of drift and the event that repairs it; merges pages. */
#include "compare.h"

static const char *const names[DRIFT_KINDS] = {
	[DRIFT_NONE] = "none",
	[DRIFT_MISSING] = "missing",
	[DRIFT_BEHIND] = "behind",
	[DRIFT_AHEAD] = "ahead",
	[DRIFT_DELETED_IN_POSTGRES] = "deleted_in_postgres",
	[DRIFT_DELETED_IN_COPY] = "deleted_in_copy",
	[DRIFT_PERSONAL_DATA] = "personal_data",
};

const char *
drift_kind_name(enum drift_kind k)
{
	return (unsigned)k < DRIFT_KINDS ? names[k] : "?";
}

enum drift_kind
drift_classify(const struct user_pair *p)
{
	if (!p->in_pg) {
		if (!p->in_copy)
			return DRIFT_NONE;
		if (!p->copy_deleted)
			return DRIFT_DELETED_IN_POSTGRES;
		return p->copy_personal ? DRIFT_PERSONAL_DATA : DRIFT_NONE;
	}
	if (!p->in_copy)
		return DRIFT_MISSING;
	/* First: a tombstone newer than the row is as impossible as a newer live document. */
	if (p->copy_version > p->pg_version)
		return DRIFT_AHEAD;
	if (p->copy_deleted)
		return DRIFT_DELETED_IN_COPY;
	return p->copy_version < p->pg_version ? DRIFT_BEHIND : DRIFT_NONE;
}

enum drift_repair
drift_repair_for(const struct user_pair *p, enum drift_kind k)
{
	switch (k) {
	case DRIFT_MISSING:
	case DRIFT_BEHIND:
		return REPAIR_SNAPSHOT;
	case DRIFT_DELETED_IN_COPY:
		/* A snapshot rebases the document, tombstone or not, but only from an older version. */
		return p->copy_version < p->pg_version ? REPAIR_SNAPSHOT : REPAIR_IMPOSSIBLE;
	case DRIFT_DELETED_IN_POSTGRES:
	case DRIFT_PERSONAL_DATA:
		/* A deletion after the tombstone's version: the consumer applies it in order, and its
		 * tombstone and history keep no name or email. */
		return REPAIR_DELETE;
	case DRIFT_AHEAD:
		return REPAIR_IMPOSSIBLE;
	case DRIFT_NONE:
		break;
	}
	return REPAIR_NONE;
}

int64_t
page_end(size_t got, size_t limit, int64_t last, int64_t bound)
{
	return got == limit && last < bound ? last : bound;
}

size_t
pair_merge(const struct pg_user *pg, size_t npg, const struct copy_doc *copy, size_t ncopy,
    int64_t upto, struct user_pair *out)
{
	size_t i = 0, j = 0, n = 0;

	for (;;) {
		bool take_pg = i < npg && pg[i].id <= upto;
		bool take_copy = j < ncopy && copy[j].id <= upto;
		struct user_pair *p = &out[n];

		if (!take_pg && !take_copy)
			return n;
		if (take_pg && take_copy && pg[i].id != copy[j].id) {
			/* Only the lower id of the two is taken now. */
			if (pg[i].id < copy[j].id)
				take_copy = false;
			else
				take_pg = false;
		}
		*p = (struct user_pair){ .id = take_pg ? pg[i].id : copy[j].id };
		if (take_pg) {
			p->in_pg = true;
			p->pg_version = pg[i++].version;
		}
		if (take_copy) {
			p->in_copy = true;
			p->copy_version = copy[j].version;
			p->copy_deleted = copy[j].deleted;
			p->copy_personal = copy[j++].personal;
		}
		n++;
	}
}
