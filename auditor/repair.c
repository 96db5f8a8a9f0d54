/* Writes repair events to the outbox: snapshots of current rows, deletions at the copy's version + 1. */
#include "repair.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_contract.h"

/* The statements are functions of migrations/0008_roles.sql, which run as the schema's owner: the
 * auditor's role may read only users' ids and versions, and write nothing but these events.
 *
 * audit_repair_snapshot writes the row's state as outbox-relay's snapshot does: its type, subject
 * and schema version from common/event_contract.h as parameters, the payload from
 * user_event_payload(), a new traceparent. It reads the users FOR SHARE, which keeps a concurrent
 * update of a user waiting until this transaction commits, so the update's own event gets a later
 * outbox id and the user's events stay in version order. A user whose current version, or a later
 * one, already waits in the outbox gets nothing: the relay carries that row (the audit saw a copy
 * that had not caught up yet). */
static const char snapshot_sql[] = "SELECT * FROM audit_repair_snapshot($1::bigint[], $2::text, "
    "$3::text, $4::smallint)";

/* A user gone from PostgreSQL has no row to read: audit_repair_delete writes the deletion at the
 * version after the copy's ($2, docs/audit.md says why that is safe), without personal data
 * (no name or email, as every deletion: docs/events.md). Ids are never reused, so a user
 * absent now stays absent; one that is present after all is left alone. */
static const char delete_sql[] = "SELECT * FROM audit_repair_delete($1::bigint[], $2::bigint[], "
    "$3::text, $4::text, $5::smallint)";

const char *
repair_outcome_name(const struct repair_item *it)
{
	switch (it->outcome) {
	case REPAIR_WRITTEN:
		return it->how == REPAIR_DELETE ? EVENT_TYPE_DELETED : EVENT_TYPE_SNAPSHOT;
	case REPAIR_WAITING:
		return "waiting";
	case REPAIR_CHANGED:
		break;
	}
	return "changed";
}

/* Runs one of the statements for the items of kind how and sets their outcomes from its rows
 * (id, version, waiting), in id order; an item without a row changed meanwhile. */
static int
write_kind(PGconn *c, enum drift_repair how, struct repair_item *items, size_t n, char *err,
    size_t errlen)
{
	int64_t *ids = malloc((n ? n : 1) * sizeof(*ids)), *versions = malloc((n ? n : 1) *
	    sizeof(*versions));
	char *id_arr = NULL, *version_arr = NULL, msg[256];
	PGresult *r = NULL;
	size_t k = 0;
	int rc = -1, rows, row = 0;

	if (ids == NULL || versions == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; i++)
		if (items[i].how == how) {
			ids[k] = items[i].id;
			versions[k++] = items[i].copy_version + 1;
		}
	if (k == 0) {
		rc = 0;
		goto done;
	}
	if ((id_arr = pg_id_array(ids, k)) == NULL || (version_arr = pg_id_array(versions, k)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	if (how == REPAIR_SNAPSHOT) {
		const char *params[4] = { id_arr, EVENT_TYPE_SNAPSHOT, EVENT_SUBJECT_SNAPSHOT,
			EVENT_SCHEMA_VERSION_TEXT };

		r = PQexecParams(c, snapshot_sql, 4, NULL, params, NULL, NULL, 0);
	} else {
		const char *params[5] = { id_arr, version_arr, EVENT_TYPE_DELETED, EVENT_SUBJECT_DELETED,
			EVENT_SCHEMA_VERSION_TEXT };

		r = PQexecParams(c, delete_sql, 5, NULL, params, NULL, NULL, 0);
	}
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		pg_error_text(c, r, msg, sizeof(msg));
		snprintf(err, errlen, "could not write %s events to the outbox: %s",
		    how == REPAIR_SNAPSHOT ? EVENT_TYPE_SNAPSHOT : EVENT_TYPE_DELETED, msg);
		goto done;
	}
	rows = PQntuples(r);
	for (size_t i = 0; i < n; i++) {
		int64_t id = 0;

		if (items[i].how != how)
			continue;
		items[i].outcome = REPAIR_CHANGED;
		items[i].version = 0;
		while (row < rows && (id = strtoll(PQgetvalue(r, row, 0), NULL, 10)) < items[i].id)
			row++;
		if (row < rows && id == items[i].id) {
			items[i].version = strtoll(PQgetvalue(r, row, 1), NULL, 10);
			items[i].outcome = strcmp(PQgetvalue(r, row, 2), "t") == 0 ? REPAIR_WAITING :
			    REPAIR_WRITTEN;
			row++;
		}
	}
	rc = 0;
done:
	PQclear(r);
	free(ids);
	free(versions);
	free(id_arr);
	free(version_arr);
	return rc;
}

int
repair_write(struct users_db *db, struct repair_item *items, size_t n, char *err, size_t errlen)
{
	PGconn *c = users_db_conn(db);

	if (n == 0)
		return 0;
	if (pg_exec_ok(c, "BEGIN", err, errlen) != 0)
		return -1;
	if (write_kind(c, REPAIR_SNAPSHOT, items, n, err, errlen) != 0 ||
	    write_kind(c, REPAIR_DELETE, items, n, err, errlen) != 0) {
		PQclear(PQexec(c, "ROLLBACK"));
		return -1;
	}
	return pg_exec_ok(c, "COMMIT", err, errlen);
}
