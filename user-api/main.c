/* user-api: REST for users on PostgreSQL; every change is committed with its outbox event. */
#include <stdio.h>
#include <nats/nats.h>
#include <stdlib.h>

#include "config.h"
#include "failpoint.h"
#include "handlers.h"
#include "httpd.h"
#include "log.h"
#include "nudge.h"
#include "pg.h"
#include "user_store.h"
#include "util.h"

/* Expired idempotency keys are removed this often. */
#define KEY_SWEEP_MS (60 * 1000)

static struct pg_settings pg;
static struct httpd_config http;
static const char *nats_url;
static long key_ttl_ms, drain_ms;
static enum log_level level;

static const struct config_entry settings[] = {
	PG_SETTINGS_ENTRIES(pg),
	{ "NATS_URL", CONFIG_STRING, &nats_url, "nats://localhost:4222", 0, 0,
	    "NATS server for the relay's wake-up nudges (optional; empty disables them)" },
	{ "USER_API_BIND", CONFIG_STRING, &http.bind, "0.0.0.0", 0, 0, "address to listen on" },
	{ "USER_API_PORT", CONFIG_INT, &http.port, "8080", 1, 65535, "HTTP port" },
	{ "USER_API_THREADS", CONFIG_INT, &http.threads, "8", 1, 256,
	    "HTTP worker threads, each with its own PostgreSQL connection" },
	{ "USER_API_MAX_BODY", CONFIG_INT, &http.max_body, "65536", 64, 16777216,
	    "largest request body in bytes (413 above)" },
	{ "USER_API_CONN_TIMEOUT", CONFIG_INT, &http.conn_timeout_s, "30", 1, 3600,
	    "seconds an idle or stalled connection is kept" },
	{ "USER_API_MAX_CONNECTIONS", CONFIG_INT, &http.max_connections, "1024", 1, 65536,
	    "concurrent connections in all" },
	{ "USER_API_MAX_CONNECTIONS_PER_IP", CONFIG_INT, &http.max_connections_per_ip, "256", 1, 65536,
	    "concurrent connections from one address" },
	{ "USER_API_IDEMPOTENCY_TTL", CONFIG_MS, &key_ttl_ms, "24h", 1000, 30L * 24 * 3600 * 1000,
	    "how long an Idempotency-Key is remembered" },
	{ "USER_API_DRAIN_TIMEOUT", CONFIG_MS, &drain_ms, "5s", 0, 9000,
	    "how long in-flight requests may finish at shutdown" },
	{ "LOG_LEVEL", CONFIG_LEVEL, &level, "info", 0, 0, "debug, info, warn or error" },
	{ NULL, 0, NULL, NULL, 0, 0, NULL },
};

static const struct cli cli = {
	.prog = "user-api",
	.version = VERSION,
	.summary = "REST service for users on PostgreSQL. Every create, update and delete writes the\n"
	    "user row and its outbox event in one transaction; outbox-relay publishes the events.\n"
	    "Endpoints: GET/POST /users, GET/PUT/DELETE /users/{id}, /healthz, /readyz, /metrics.",
	.commands = NULL,
	.settings = settings,
};

static void
sweep_keys(void)
{
	char err[512];
	long deleted, total = 0;

	/* Batch after batch until one comes back short, so that keys cannot expire faster than
	 * they are removed; each batch is its own short statement. */
	do {
		if (user_store_expire_keys(user_store_get(), &deleted, err, sizeof(err)) != STORE_OK) {
			log_warnx("could not remove expired idempotency keys: %s", err);
			break;
		}
		total += deleted;
	} while (deleted == USER_STORE_EXPIRE_BATCH && !shutdown_requested());
	if (total > 0)
		log_info("removed %ld expired idempotency keys", total);
}

int
main(int argc, char **argv)
{
	struct httpd *server;
	char err[1024];
	int64_t next_sweep;
	int argi, rc;

	if ((rc = cli_start(&cli, argc, argv, &argi)) >= 0)
		return rc;
	if (argi < argc) {
		fprintf(stderr, "user-api: unexpected argument \"%s\"; try --help\n", argv[argi]);
		return 2;
	}
	log_init("user-api", level);
	if (failpoint_init(err, sizeof(err)) != 0)
		fatal("%s", err);

	user_store_configure(&pg, key_ttl_ms / 1000);
	if (nudge_start(nats_url, err, sizeof(err)) != 0)
		fatal("%s", err);
	shutdown_signals_install();

	server = httpd_start(&http, user_api_routes, NULL, user_api_ready, NULL, err, sizeof(err));
	if (server == NULL)
		fatal("%s (set USER_API_PORT to move it)", err);
	log_info("listening on %s:%ld (PostgreSQL %s:%ld/%s)", http.bind, http.port, pg.host, pg.port, pg.db);

	next_sweep = mono_ms() + KEY_SWEEP_MS;
	while (!shutdown_sleep_ms(1000)) {
		if (mono_ms() >= next_sweep) {
			sweep_keys();
			next_sweep = mono_ms() + KEY_SWEEP_MS;
		}
	}

	log_info("shutting down: finishing requests in flight");
	httpd_stop(server, drain_ms);
	nudge_stop();
	nats_Close();
	log_info("stopped");
	return 0;
}
