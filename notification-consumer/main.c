/* The notification-consumer process: applies user events to MongoDB and serves the copy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "applier.h"
#include "config.h"
#include "failpoint.h"
#include "httpd.h"
#include "lease.h"
#include "log.h"
#include "natsconn.h"
#include "replay.h"
#include "settings.h"
#include "store.h"
#include "util.h"

#define DRAIN_MS 3000

static const struct cli cli = {
	.prog = "notification-consumer",
	.version = VERSION,
	.summary = "Applies the events of the USER_EVENTS stream to MongoDB exactly once in effect and\n"
	    "serves the copy on /notifications; the replay command rebuilds it from the stream.",
	.commands = REPLAY_USAGE,
	.settings = settings_table,
	.validate = settings_resolve,
};

int
main(int argc, char **argv)
{
	struct store_config sc;
	struct httpd_config hc;
	struct store *store;
	struct applier *applier;
	struct lease *lease;
	struct httpd *httpd;
	struct api api;
	natsConnection *nc;
	char err[512], owner[300], host[256], instance[37];
	int argi, rc;

	if ((rc = cli_start(&cli, argc, argv, &argi)) >= 0)
		return rc;
	rc = 0;
	if (argi < argc && strcmp(argv[argi], "replay") != 0) {
		fprintf(stderr, "notification-consumer: unknown command \"%s\"; try --help\n", argv[argi]);
		return 2;
	}
	if (argi < argc && replay_help(argc - argi, argv + argi))
		return 0;
	log_init(argi < argc ? "notification-consumer replay" : "notification-consumer",
	    settings.log_level);
	if (failpoint_init(err, sizeof(err)) != 0)
		fatal("%s", err);

	store_library_init();
	/* A new id in every life of the process: the history records which process applied what. */
	uuid_new(instance);
	sc = (struct store_config){ settings.mongodb_uri, settings.mongodb_db, settings.collection,
	    settings.history, settings.mongo_timeout_ms, "notification-consumer", instance };
	if ((store = store_new(&sc, err, sizeof(err))) == NULL)
		fatal("%s", err);
	if ((nc = natsconn_open(settings.nats_url, "notification-consumer", err, sizeof(err))) == NULL)
		fatal("%s", err);
	shutdown_signals_install();

	if (argi < argc) {
		rc = replay_main(nc, store, &settings, argc - argi, argv + argi);
		goto out;
	}

	/* The same host and port cannot run twice, so a restarted process takes its lease back. */
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(owner, sizeof(owner), "%s:%ld", host, settings.port);
	if ((lease = lease_new(nc, settings.durable, owner, settings.lease_ttl_ms, err,
	    sizeof(err))) == NULL || lease_start(lease, err, sizeof(err)) != 0)
		fatal("%s", err);
	if ((applier = applier_new(nc, store, lease, &settings, err, sizeof(err))) == NULL)
		fatal("%s", err);
	if (applier_start(applier, err, sizeof(err)) != 0)
		fatal("%s", err);
	api = (struct api){ store, applier, settings.read_wait_max_ms };
	hc = (struct httpd_config){ .bind = settings.bind, .port = settings.port,
	    .threads = settings.http_threads, .max_body = 4096, .conn_timeout_s = 30,
	    .max_connections = 1024, .max_connections_per_ip = 256 };
	if ((httpd = httpd_start(&hc, api_routes, &api, applier_ready, applier, err, sizeof(err))) == NULL)
		fatal("%s", err);
	log_info("listening on %s:%ld, consuming %s as %s into %s.%s, instance %s", settings.bind,
	    settings.port, settings.stream, settings.durable, settings.mongodb_db, settings.collection,
	    instance);

	while (!shutdown_sleep_ms(1000))
		;

	log_info("shutting down: finishing the event in hand");
	httpd_stop(httpd, DRAIN_MS);
	applier_join(applier);
	applier_free(applier);
	lease_free(lease);
	log_info("stopped");
out:
	/* Unconnected, a flush would wait its full timeout. */
	if (natsconn_ok(nc))
		natsConnection_FlushTimeout(nc, 1000);
	natsConnection_Destroy(nc);
	store_free(store);
	store_library_cleanup();
	nats_Close();
	return rc;
}
