/* Writes repair events to the outbox: snapshots of current rows, deletions at the copy's version + 1. */
#include "repair.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_contract.h"

/* The row's state as outbox-relay/snapshot.c writes it: its type, subject and schema version from
 * common/event_contract.h as parameters, the payload from user_event_payload(), a new traceparent.
 * FOR SHARE keeps a concurrent update of a user waiting until this transaction commits, so the
 * update's own event gets a later outbox id and the user's events stay in version order. A user
 * whose current version, or a later one, already waits in the outbox gets nothing: the relay
 * carries that row (the audit saw a copy that had not caught up yet). */
static const char snapshot_sql[] =
    "WITH u AS (SELECT id, name, email, version, updated_at FROM users "
    "    WHERE id = ANY ($1::bigint[]) ORDER BY id FOR SHARE), "
    "p AS (SELECT aggregate_id, max(version) AS version FROM outbox_pending "
    "    WHERE aggregate_id = ANY ($1::bigint[]) GROUP BY aggregate_id), "
    "w AS (SELECT u.*, coalesce(p.version >= u.version, false) AS waiting "
    "    FROM u LEFT JOIN p ON p.aggregate_id = u.id), "
    "ins AS (INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers, "
    "    payload, schema_version) "
    "  SELECT gen_random_uuid(), id, $2::text, version, $3::text, "
    "    jsonb_build_object('traceparent', '00-' || md5(random()::text) || '-' || "
    "      substr(md5(random()::text), 1, 16) || '-01'), "
    "    user_event_payload(id, name, email, version, updated_at, false), $4::smallint "
    "  FROM w WHERE NOT waiting ORDER BY id) "
    "SELECT id, version, waiting FROM w ORDER BY id";

/* A user gone from PostgreSQL has no row to read: the deletion is the version after the copy's
 * ($2, docs/audit.md says why that is safe), and carries no personal data, as every deletion
 * (docs/events.md). Ids are never reused, so a user absent now stays absent;
 * one that is present after all is left alone. */
static const char delete_sql[] =
    "WITH d AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS d (id, version)), "
    "p AS (SELECT aggregate_id, max(version) AS version FROM outbox_pending "
    "    WHERE aggregate_id = ANY ($1::bigint[]) GROUP BY aggregate_id), "
    "w AS (SELECT d.id, d.version, coalesce(p.version >= d.version, false) AS waiting "
    "    FROM d LEFT JOIN p ON p.aggregate_id = d.id "
    "    WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.id = d.id)), "
    "ins AS (INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers, "
    "    payload, schema_version) "
    "  SELECT gen_random_uuid(), id, $3::text, version, $4::text, "
    "    jsonb_build_object('traceparent', '00-' || md5(random()::text) || '-' || "
    "      substr(md5(random()::text), 1, 16) || '-01'), "
    "    user_event_payload(id, NULL, NULL, version, clock_timestamp(), true) - "
    EVENT_PERSONAL_KEYS_SQL ", $5::smallint "
    "  FROM w WHERE NOT waiting ORDER BY id) "
    "SELECT id, version, waiting FROM w ORDER BY id";

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
