/* user-api: REST for users on PostgreSQL; every change is committed with its outbox event. */
#include <nats/nats.h>
#include <stdint.h>

#include "clock.h"
#include "evloop.h"
#include "failpoint.h"
#include "handlers.h"
#include "httpd.h"
#include "log.h"
#include "nudge.h"
#include "settings.h"
#include "shutdown.h"
#include "user_store.h"

static void
sweep_keys(struct user_store *store)
{
	char err[512];
	long deleted;

	if (user_store_expire_keys(store, &deleted, err, sizeof(err)) != USER_STORE_OK)
		log_warnx("could not remove expired idempotency keys: %s", err);
	if (deleted > 0)
		log_info("removed %ld expired idempotency keys", deleted);
}

int
main(int argc, char **argv)
{
	struct user_api_settings set;
	struct evloop *loop;
	struct user_store *store;
	struct httpd *server;
	char err[1024];
	int64_t next_sweep;
	int rc;

	if ((rc = user_api_settings_load(argc, argv, &set)) >= 0)
		return rc;
	log_init("user-api", set.log_level, set.log_format);
	if (failpoint_init(err, sizeof(err)) != 0)
		fatal("%s", err);

	/* One thread serves HTTP and every PostgreSQL connection; the store is put on the loop
	 * before the server, so that at a stop it fails what is still in flight before the server
	 * answers it. */
	if ((loop = evloop_new(err, sizeof(err))) == NULL)
		fatal("%s", err);
	if ((store = user_store_new(loop, &set.store, err, sizeof(err))) == NULL)
		fatal("%s", err);
	if (nudge_start(&set.nats, err, sizeof(err)) != 0)
		fatal("%s", err);
	shutdown_signals_install();

	set.http.loop = loop;
	server = httpd_start(&set.http, user_api_routes, store, user_api_ready, store, err,
	    sizeof(err));
	if (server == NULL)
		fatal("%s (set USER_API_PORT to move it)", err);
	if (evloop_start(loop, "event-loop", err, sizeof(err)) != 0)
		fatal("%s", err);
	log_info("listening on %s:%ld (PostgreSQL %s:%ld/%s)", set.http.bind, set.http.port,
	    set.store.pg.host, set.store.pg.port, set.store.pg.db);

	next_sweep = mono_ms() + set.key_sweep_interval_ms;
	while (!shutdown_sleep_ms(1000)) {
		if (mono_ms() >= next_sweep) {
			sweep_keys(store);
			next_sweep = mono_ms() + set.key_sweep_interval_ms;
		}
	}

	log_info("shutting down: finishing requests in flight");
	httpd_stop(server, set.drain_ms);	/* stops the loop too */
	user_store_free(store);
	evloop_free(loop);
	nudge_stop();
	natsconn_library_close();
	log_info("stopped");
	return 0;
}
