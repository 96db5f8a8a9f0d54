/* user-api's settings table: every environment variable it reads, with its default, range and help. */
#include "settings.h"

#include <stdio.h>

#include "config.h"
#include "natsconn.h"
#include "pg.h"

/* The table's targets: one per process, copied out by user_api_settings_load(). A static table
 * bound to a static struct needs no copying at run time and no fixed-size buffer. */
static struct user_api_settings loaded = { .http.prefix = "USER_API" };

static const struct config_entry table[] = {
	PG_SETTINGS_ENTRIES(loaded.store.pg, PG_ROLE_API),
	NATS_SETTINGS_ENTRIES(loaded.nats,
	    "NATS server for the relay's wake-up nudges (optional; empty disables them)", true),
	{ "USER_API_BIND", CONFIG_STRING, &loaded.http.bind, "127.0.0.1", 0, 0,
	    "address to listen on (an address other than loopback needs API_TOKENS_FILE)" },
	{ "USER_API_PORT", CONFIG_INT, &loaded.http.port, "8080", 1, 65535, "HTTP port" },
	HTTPD_SECURITY_ENTRIES(loaded.http, "USER_API"),
	{ "USER_API_PG_CONNECTIONS", CONFIG_INT, &loaded.store.connections, "4", 1, 64,
	    "PostgreSQL connections; requests share them, many statements in flight on one (pipeline "
	    "mode), the creations and reads of one loop round committed together (the others of a "
	    "failed one sent again alone); one thread serves HTTP and all of them" },
	{ "USER_API_MAX_BODY", CONFIG_INT, &loaded.http.max_body, "65536", 64, 16777216,
	    "largest request body in bytes (413 above)" },
	{ "USER_API_CONN_TIMEOUT", CONFIG_INT, &loaded.http.conn_timeout_s, "30", 1, 3600,
	    "seconds a connection may go without a byte in or out (idle between requests, or an "
	    "answer the client does not read)" },
	{ "USER_API_MAX_CONNECTIONS", CONFIG_INT, &loaded.http.max_connections, "1024", 1, 65536,
	    "concurrent connections in all" },
	{ "USER_API_MAX_CONNECTIONS_PER_IP", CONFIG_INT, &loaded.http.max_connections_per_ip, "64", 1,
	    65536, "concurrent connections from one address" },
	HTTPD_LIMIT_ENTRIES(loaded.http, "USER_API"),
	{ "USER_API_RECONNECT_HOLDOFF", CONFIG_MS, &loaded.store.reconnect_holdoff_ms, "250ms", 0, 60000,
	    "after a failed PostgreSQL connect, requests get 503 at once for this long instead of each "
	    "trying again" },
	{ "USER_API_IDEMPOTENCY_TTL", CONFIG_MS, &loaded.store.idempotency_ttl_ms, "24h", 1000,
	    30L * 24 * 3600 * 1000, "how long an Idempotency-Key is remembered" },
	{ "USER_API_KEY_SWEEP_INTERVAL", CONFIG_MS, &loaded.key_sweep_interval_ms, "1m", 1000, 86400000,
	    "how often expired idempotency keys are removed" },
	{ "USER_API_KEY_SWEEP_BATCH", CONFIG_INT, &loaded.store.key_sweep_batch, "1000", 1, 100000,
	    "expired idempotency keys removed per statement (batches repeat until one is short)" },
	{ "USER_API_DRAIN_TIMEOUT", CONFIG_MS, &loaded.drain_ms, "5s", 0, 9000,
	    "how long in-flight requests may finish at shutdown" },
	LOG_SETTINGS_ENTRIES(loaded.log_level, loaded.log_format),
	{ NULL, 0, NULL, NULL, 0, 0, NULL },
};

/* What the table alone cannot check: relations between values. */
static int
check(const void *arg, char *err, size_t errlen)
{
	const struct user_api_settings *s = arg;

	if (httpd_config_check(&s->http, err, errlen) != 0)
		return -1;
	if (natsconn_settings_check(&s->nats, err, errlen) != 0)
		return -1;
	return pg_settings_check(&s->store.pg, err, errlen);
}

static const struct cli cli = {
	.prog = "user-api",
	.version = VERSION,
	.summary = "REST service for users on PostgreSQL. Every create, update and delete writes the\n"
	    "user row and its outbox event in one transaction; outbox-relay publishes the events.\n"
	    "Endpoints: GET/POST /users, GET/PUT/DELETE /users/{id}, /healthz, /readyz, /metrics.",
	.commands = NULL,
	.settings = table,
	.validate = check,
	.validate_arg = &loaded,
};

int
user_api_settings_load(int argc, char **argv, struct user_api_settings *out)
{
	int argi, rc;

	if ((rc = cli_start(&cli, argc, argv, &argi)) >= 0)
		return rc;
	if (argi < argc) {
		fprintf(stderr, "user-api: unexpected argument \"%s\"; try --help\n", argv[argi]);
		return 2;
	}
	*out = loaded;
	return -1;
}
