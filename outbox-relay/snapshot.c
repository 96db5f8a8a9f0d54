/* Seeds the stream from PostgreSQL: user_snapshot outbox rows in resumable batches of users. */
#include "snapshot.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "event_contract.h"
#include "log.h"
#include "util.h"

/* outbox_snapshot_users (migrations/0008_roles.sql) runs as the schema's owner, since the relay's
 * role may not read users. It reads them FOR SHARE, which keeps a concurrent update of the same
 * user waiting until this batch commits, so its own outbox row gets a later id and per-user order
 * holds. */
static const char batch_sql[] = "SELECT * FROM outbox_snapshot_users($1::bigint, $2::bigint, "
    "$3::text, $4::text, $5::smallint)";

int
snapshot_parse_args(int argc, char **argv, struct snapshot_options *o, char *err, size_t errlen)
{
	o->after = 0;
	o->batch = 1000;
	o->help = false;
	for (int i = 0; i < argc; i++) {
		long v;

		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			o->help = true;
		} else if (strcmp(argv[i], "--after") == 0 && i + 1 < argc) {
			if (config_parse_long(argv[++i], 0, INT64_MAX, &v) != 0) {
				snprintf(err, errlen, "invalid --after \"%s\": expected a user id", argv[i]);
				return -1;
			}
			o->after = v;
		} else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
			if (config_parse_long(argv[++i], 1, 100000, &v) != 0) {
				snprintf(err, errlen, "invalid --batch \"%s\": expected 1 to 100000", argv[i]);
				return -1;
			}
			o->batch = v;
		} else {
			snprintf(err, errlen, "unknown snapshot argument \"%s\"; expected --after ID, "
			    "--batch N or --help", argv[i]);
			return -1;
		}
	}
	return 0;
}

int
snapshot_run(const struct pg_settings *pg, const struct snapshot_options *o, int64_t *written,
    int64_t *last, char *err, size_t errlen)
{
	char after[24], lim[24], msg[256];
	const char *params[5] = { NULL, NULL, EVENT_TYPE_SNAPSHOT, EVENT_SUBJECT_SNAPSHOT,
		EVENT_SCHEMA_VERSION_TEXT };
	PGconn *c;
	int64_t total = 0;
	int rc = -1;

	*written = 0;
	*last = o->after;
	c = pg_connect(pg, "outbox-relay snapshot", err, errlen);
	if (c == NULL)
		return -1;
	for (;;) {
		PGresult *r;
		int64_t n, upto;

		if (shutdown_requested()) {
			log_warnx("snapshot: interrupted; resume with --after %" PRId64, *last);
			rc = 0;
			break;
		}
		snprintf(after, sizeof(after), "%" PRId64, *last);
		snprintf(lim, sizeof(lim), "%ld", o->batch);
		params[0] = after;
		params[1] = lim;
		if (pg_exec_ok(c, "BEGIN", err, errlen) != 0)
			break;
		r = PQexecParams(c, batch_sql, 5, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_TUPLES_OK) {
			pg_error_text(c, r, msg, sizeof(msg));
			snprintf(err, errlen, "could not write snapshot events after user %" PRId64 ": %s",
			    *last, msg);
			PQclear(r);
			PQclear(PQexec(c, "ROLLBACK"));
			break;
		}
		n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		upto = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
		PQclear(r);
		if (pg_exec_ok(c, "COMMIT", err, errlen) != 0)
			break;
		if (n == 0) {
			rc = 0;
			break;
		}
		total += n;
		*written = total;
		*last = upto;
		log_info("snapshot: %" PRId64 " events written, last user id %" PRId64, total, upto);
	}
	PQfinish(c);
	return rc;
}
