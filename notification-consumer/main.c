/* The notification-consumer process: applies user events to MongoDB and serves the copy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "applier.h"
#include "failpoint.h"
#include "httpd.h"
#include "lease.h"
#include "log.h"
#include "natsconn.h"
#include "replay.h"
#include "settings.h"
#include "store.h"
#include "util.h"
#include "waiters.h"

/* The live consumer: the lease, the apply thread and the read API, until SIGTERM or SIGINT. */
static void
serve(const struct consumer_settings *set, natsConnection *nc, struct store *store)
{
	struct applier *applier;
	struct waiters *waiters;
	struct lease *lease;
	struct httpd *httpd;
	struct api api;
	char err[512], owner[320], host[256];

	/* The owner is this life of the process, not its host and port: two machines may share a
	 * hostname and a port, and each would believe it holds the lease. The host and port only
	 * help a human read /readyz. A restarted process waits for its old lease to lapse. */
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(owner, sizeof(owner), "%s:%ld/%s", host, set->http.port, store_instance(store));
	if ((lease = lease_new(nc, set->durable, owner, set->lease_ttl_ms, set->lease_timeout_ms, err,
	    sizeof(err))) == NULL || lease_start(lease, err, sizeof(err)) != 0)
		fatal("%s", err);
	if ((applier = applier_new(nc, store, lease, set, err, sizeof(err))) == NULL)
		fatal("%s", err);
	if ((waiters = waiters_new(store, lease, set->max_waiters, set->wait_recheck_ms, err,
	    sizeof(err))) == NULL || waiters_start(waiters, err, sizeof(err)) != 0)
		fatal("%s", err);
	applier_on_copy_at(applier, waiters_copy_at_fn, waiters);
	if (applier_start(applier, err, sizeof(err)) != 0)
		fatal("%s", err);
	api = (struct api){ store, waiters, set->read_wait_max_ms, set->max_waiters };
	if ((httpd = httpd_start(&set->http, api_routes, &api, applier_ready, applier, err,
	    sizeof(err))) == NULL)
		fatal("%s", err);
	log_info("listening on %s:%ld, consuming %s as %s into %s.%s, instance %s", set->http.bind,
	    set->http.port, set->stream, set->durable, set->store.db, set->store.collection,
	    store_instance(store));

	while (!shutdown_sleep_ms(1000))
		;

	log_info("shutting down: finishing the event in hand");
	/* Suspended reads are answered first: libmicrohttpd must not stop with one suspended. */
	waiters_close(waiters);
	httpd_stop(httpd, set->drain_ms);
	applier_join(applier);
	applier_free(applier);
	waiters_free(waiters);
	lease_free(lease);
	log_info("stopped");
}

int
main(int argc, char **argv)
{
	struct consumer_settings set;
	struct replay_options replay;
	struct store *store;
	natsConnection *nc;
	char err[512], instance[37];
	bool replaying;
	int argi, rc = 0;

	/* Every argument is read before anything starts: --help, of the process or of a command,
	 * answers without the MongoDB driver, NATS or a log line. */
	if ((rc = consumer_settings_load(argc, argv, &set, &argi)) >= 0)
		return rc;
	replaying = argi < argc;
	if (replaying && strcmp(argv[argi], "replay") != 0) {
		fprintf(stderr, "notification-consumer: unknown command \"%s\"; try --help\n", argv[argi]);
		return 2;
	}
	if (replaying && (rc = replay_parse_args(argc - argi, argv + argi, &replay)) >= 0)
		return rc;
	rc = 0;

	log_init(replaying ? "notification-consumer replay" : "notification-consumer", set.log_level,
	    set.log_format);
	if (failpoint_init(err, sizeof(err)) != 0)
		fatal("%s", err);
	store_library_init();
	/* A new id in every life of the process: the history records which process applied what. */
	uuid_new(instance);
	set.store.appname = "notification-consumer";
	set.store.instance = instance;
	if ((store = store_new(&set.store, err, sizeof(err))) == NULL)
		fatal("%s", err);
	if ((nc = natsconn_open(&set.nats, "notification-consumer", false, err, sizeof(err))) == NULL)
		fatal("%s", err);
	shutdown_signals_install();

	if (replaying)
		rc = replay_run(nc, store, &set, &replay);
	else
		serve(&set, nc, store);

	/* Unconnected, a flush would wait its full timeout. */
	if (natsconn_ok(nc))
		natsConnection_FlushTimeout(nc, 1000);
	natsConnection_Destroy(nc);
	store_free(store);
	store_library_cleanup();
	natsconn_library_close();
	return rc;
}
