/* outbox-relay: moves committed outbox rows to the USER_EVENTS stream, and seeds it on demand. */
#include <inttypes.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "failpoint.h"
#include "httpd.h"
#include "log.h"
#include "relay.h"
#include "settings.h"
#include "snapshot.h"
#include "util.h"

/* The relay serves only the built-in /healthz, /readyz and /metrics. */
static const struct http_route routes[] = { { NULL, NULL, NULL } };

static int
run_snapshot(const struct relay_settings *s, int argc, char **argv)
{
	struct snapshot_options o;
	int64_t written, last;
	char err[512];

	if (snapshot_parse_args(argc, argv, &o, err, sizeof(err)) != 0) {
		log_error("%s", err);
		return 2;
	}
	if (o.help) {
		printf("Usage: outbox-relay snapshot [--after ID] [--batch N]\n\n"
		    "Writes one user_snapshot event (the user's full state at its current version) per\n"
		    "user to the outbox, --batch users (default 1000) per transaction, in id order.\n"
		    "Prints \"<events written> <last user id>\" at the end; after an interruption, rerun\n"
		    "with --after <last user id>. Settings come from the environment: see\n"
		    "outbox-relay --help.\n");
		return 0;
	}
	log_info("snapshot: writing user_snapshot events for users after id %" PRId64
	    ", %ld per batch", o.after, o.batch);
	if (snapshot_run(&s->pg, &o, &written, &last, err, sizeof(err)) != 0) {
		log_error("snapshot: %s; %" PRId64 " events written, resume with --after %" PRId64, err,
		    written, last);
		return 1;
	}
	log_info("snapshot: done, %" PRId64 " events written, last user id %" PRId64, written, last);
	printf("%" PRId64 " %" PRId64 "\n", written, last);
	return 0;
}

static void
warn_limits(const struct relay_settings *s)
{
	if (s->stream_max_age_ms > 0)
		log_warnx("RELAY_STREAM_MAX_AGE is %ldms: events older than that leave the stream, read "
		    "or not, a replay rebuilds only what it still holds, and a purge of its first events "
		    "is no longer reported as a gap", s->stream_max_age_ms);
	else
		log_info("RELAY_STREAM_MAX_AGE is 0: the stream keeps every event, and with them the "
		    "names and emails of deleted users in their older events (docs/relay.md)");
	if (s->stream_max_bytes > 0)
		log_warnx("RELAY_STREAM_MAX_BYTES is %ld: once the stream is full, publishing is refused "
		    "and events wait in the outbox", s->stream_max_bytes);
}

int
main(int argc, char **argv)
{
	struct relay_settings s;
	struct relay *relay;
	struct httpd *httpd;
	char err[512], nats_shown[512];
	int argi, rc;

	if ((rc = relay_settings_load(argc, argv, &s, &argi)) >= 0)
		return rc;
	log_init("outbox-relay", s.log_level, s.log_format);
	if (failpoint_init(err, sizeof(err)) != 0) {
		log_error("%s", err);
		return 2;
	}
	shutdown_signals_install();

	if (argi < argc && strcmp(argv[argi], "snapshot") == 0)
		return run_snapshot(&s, argc - argi - 1, argv + argi + 1);
	if (argi < argc) {
		log_error("unknown command \"%s\"; try --help", argv[argi]);
		return 2;
	}

	config_url_redact(s.nats.url, nats_shown, sizeof(nats_shown));
	log_info("starting %s: PostgreSQL %s:%ld/%s, NATS %s, batches of %ld, %ld in flight", VERSION,
	    s.pg.host, s.pg.port, s.pg.db, nats_shown, s.batch_size, s.pipeline);
	warn_limits(&s);
	relay = relay_new(&s, err, sizeof(err));
	if (relay == NULL)
		fatal("%s", err);

	httpd = httpd_start(&s.http, routes, NULL, relay_ready, relay, err, sizeof(err));
	if (httpd == NULL) {
		relay_free(relay);
		fatal("%s", err);
	}
	log_info("listening on %s:%ld", s.http.bind, s.http.port);

	relay_run(relay);

	log_info("shutting down");
	httpd_stop(httpd, s.drain_ms);
	relay_free(relay);
	natsconn_library_close();
	return 0;
}
