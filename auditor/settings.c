/* audit's settings table, every environment variable it reads with its default, range and help,
 * and its command line. */
#include "settings.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "mongo_driver.h"

/* The table's targets: one per process, copied out by audit_settings_load(). */
static struct audit_settings loaded = { .http.prefix = "AUDIT" };

/* The MongoDB names and defaults are the consumer's (notification-consumer/settings.c): one copy,
 * one set of variables. */
static const struct config_entry table[] = {
	PG_SETTINGS_ENTRIES(loaded.pg, PG_ROLE_AUDIT),
	{ "MONGODB_URI", CONFIG_STRING, &loaded.mongodb_uri, "mongodb://localhost:27017", 0, 0,
	    "MongoDB (or FerretDB) connection string" },
	{ "MONGODB_DB", CONFIG_STRING, &loaded.mongodb_db, "notifications_db", 0, 0,
	    "database that holds the copy" },
	{ "MONGODB_COLLECTION", CONFIG_STRING, &loaded.collection, "user_notifications", 0, 0,
	    "collection of the users' current state" },
	{ "MONGODB_TIMEOUT", CONFIG_MS, &loaded.mongodb_timeout_ms, "2s", 100, 60000,
	    "server selection, connect and socket timeout for MongoDB" },
	{ "AUDIT_PAGE_SIZE", CONFIG_INT, &loaded.page_size, "1000", 1, 100000,
	    "users read per page from PostgreSQL and from the copy (one repair transaction each)" },
	{ "AUDIT_RECHECK_AFTER", CONFIG_MS, &loaded.recheck_ms, "2s", 0, 600000,
	    "a user that differs is looked at again this long after, and counts as drift only if it "
	    "still differs (0: no second look)" },
	{ "AUDIT_PROGRESS_INTERVAL", CONFIG_MS, &loaded.progress_ms, "2s", 100, 3600000,
	    "how often a progress line is logged when stderr is not a terminal" },
	{ "AUDIT_BIND", CONFIG_STRING, &loaded.http.bind, "127.0.0.1", 0, 0,
	    "address to listen on (an address other than loopback needs API_TOKENS_FILE)" },
	{ "AUDIT_PORT", CONFIG_INT, &loaded.http.port, "8083", 1, 65535,
	    "port of the HTTP server of --every" },
	HTTPD_SECURITY_ENTRIES(loaded.http, "AUDIT"),
	{ "AUDIT_THREADS", CONFIG_INT, &loaded.http.threads, "2", 1, 256, "HTTP worker threads" },
	{ "AUDIT_MAX_BODY", CONFIG_INT, &loaded.http.max_body, "1024", 64, 16777216,
	    "largest request body in bytes (413 above; the endpoints take none)" },
	{ "AUDIT_CONN_TIMEOUT", CONFIG_INT, &loaded.http.conn_timeout_s, "10", 1, 3600,
	    "seconds a connection may go without a byte in or out (idle between requests, or an "
	    "answer the client does not read)" },
	{ "AUDIT_MAX_CONNECTIONS", CONFIG_INT, &loaded.http.max_connections, "64", 1, 65536,
	    "concurrent HTTP connections in all" },
	{ "AUDIT_MAX_CONNECTIONS_PER_IP", CONFIG_INT, &loaded.http.max_connections_per_ip, "8", 1,
	    65536, "concurrent HTTP connections from one address" },
	HTTPD_LIMIT_ENTRIES(loaded.http, "AUDIT"),
	{ "AUDIT_DRAIN_TIMEOUT", CONFIG_MS, &loaded.drain_ms, "1s", 0, 9000,
	    "how long HTTP requests in flight may finish at shutdown" },
	LOG_SETTINGS_ENTRIES(loaded.log_level, loaded.log_format),
	{ NULL, 0, NULL, NULL, 0, 0, NULL },
};

/* What the table alone cannot check. A URI that does not parse is bad settings (2), not an
 * unreachable store (3), and --check says so too. */
static int
check(const void *arg, char *err, size_t errlen)
{
	const struct audit_settings *s = arg;
	mongoc_uri_t *uri;

	if (httpd_config_check(&s->http, err, errlen) != 0)
		return -1;
	if (pg_settings_check(&s->pg, err, errlen) != 0)
		return -1;
	/* The parser's warnings (an unknown option) are log lines, --check's too. */
	log_init("audit", s->log_level, s->log_format);
	if ((uri = mongo_uri_parse(s->mongodb_uri, s->mongodb_timeout_ms, NULL, err, errlen)) == NULL)
		return -1;
	mongoc_uri_destroy(uri);
	return 0;
}

static const struct cli cli = {
	.prog = "audit",
	.version = VERSION,
	.summary =
	    "Compares PostgreSQL's users (id, version; a user absent from users is deleted) with the\n"
	    "copy in MongoDB (MONGODB_DB.MONGODB_COLLECTION: _id, version, deleted), page by page in id\n"
	    "order without holding locks, and prints one line on stdout per user that differs:\n"
	    "  missing              in PostgreSQL, not in the copy\n"
	    "  behind               the copy's version is older than PostgreSQL's\n"
	    "  ahead                the copy's version is newer: impossible, logged as an error\n"
	    "  deleted_in_postgres  deleted in PostgreSQL, alive in the copy\n"
	    "  deleted_in_copy      a tombstone in the copy, alive in PostgreSQL\n"
	    "  personal_data        deleted on both sides, but the tombstone still holds a name or email\n"
	    "A user that differs is looked at again after AUDIT_RECHECK_AFTER: an event on its way is\n"
	    "not drift. Progress and the summary line go to stderr (docs/audit.md).\n"
	    "\n"
	    "  audit                 one pass\n"
	    "  audit --repair        one pass, and each drifted user's current state is written to the\n"
	    "                        outbox as an event (user_snapshot, or user_deleted at the copy's\n"
	    "                        version + 1, also for personal_data), which the relay and the\n"
	    "                        consumer carry as any other;\n"
	    "                        ahead and same-version tombstones cannot be repaired by an event\n"
	    "  audit --every 5m      a pass every 5 minutes until SIGTERM, with /metrics, /healthz and\n"
	    "                        /readyz on AUDIT_BIND:AUDIT_PORT (with --repair: repairs each pass)\n"
	    "\n"
	    "Exit status: 0 no drift; 1 drift found (after --repair too: the events are written, not\n"
	    "yet applied: run audit again to see them take effect); 2 bad usage or settings; 3 PostgreSQL\n"
	    "or MongoDB could not be reached or read; 4 interrupted by SIGINT or SIGTERM before the end.\n"
	    "With --every: 0 after SIGTERM or SIGINT, 2 for bad usage or settings.",
	.commands = NULL,
	.settings = table,
	.validate = check,
	.validate_arg = &loaded,
};

/* Takes --repair and --every out of argv into *out; what is left (the program's name first) goes
 * to cli_start(). Returns -1 to go on, or AUDIT_EXIT_USAGE with the reason printed. */
static int
parse_args(int argc, char **argv, char **rest, int *nrest, struct audit_settings *out)
{
	*nrest = 0;
	rest[(*nrest)++] = argv[0];
	for (int i = 1; i < argc; i++) {
		const char *every = NULL;

		if (strcmp(argv[i], "--repair") == 0) {
			out->repair = true;
			continue;
		}
		if (strcmp(argv[i], "--every") == 0) {
			if (i + 1 == argc) {
				fprintf(stderr, "audit: --every needs a duration such as 30s, 5m or 1h; try "
				    "--help\n");
				return AUDIT_EXIT_USAGE;
			}
			every = argv[++i];
		} else if (strncmp(argv[i], "--every=", 8) == 0) {
			every = argv[i] + 8;
		}
		if (every != NULL) {
			if (config_parse_ms(every, 1000, 7L * 24 * 3600 * 1000, &out->every_ms) != 0) {
				fprintf(stderr, "audit: invalid --every \"%s\": expected a duration such as 30s, "
				    "5m or 1h, from 1s to 168h; try --help\n", every);
				return AUDIT_EXIT_USAGE;
			}
			continue;
		}
		rest[(*nrest)++] = argv[i];
	}
	rest[*nrest] = NULL;
	return -1;
}

int
audit_settings_load(int argc, char **argv, struct audit_settings *out)
{
	char **rest = calloc((size_t)argc + 1, sizeof(*rest));
	int nrest, argi, rc;

	if (rest == NULL) {
		fprintf(stderr, "audit: out of memory\n");
		return AUDIT_EXIT_USAGE;
	}
	memset(&loaded, 0, sizeof(loaded));
	if ((rc = parse_args(argc, argv, rest, &nrest, &loaded)) >= 0)
		goto done;
	/* cli_start() loads the table into loaded; the command line's fields are not in it. */
	if ((rc = cli_start(&cli, nrest, rest, &argi)) >= 0)
		goto done;
	if (argi < nrest) {
		fprintf(stderr, "audit: unexpected argument \"%s\"; try --help\n", rest[argi]);
		rc = AUDIT_EXIT_USAGE;
		goto done;
	}
	*out = loaded;
	rc = -1;
done:
	free(rest);
	return rc;
}
