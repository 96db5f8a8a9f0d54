/* audit: compares PostgreSQL's users with the consumer's copy, reports the drift, and repairs it
 * through the outbox; once, or at an interval with metrics. */
#include <stdio.h>

#include "audit.h"
#include "config.h"
#include "httpd.h"
#include "log.h"
#include "mongo_driver.h"
#include "periodic.h"
#include "settings.h"
#include "util.h"

/* --every serves only the built-in /healthz, /readyz and /metrics. */
static const struct http_route routes[] = { { NULL, NULL, NULL } };

/* One pass; its exit status says what it found (settings.h). */
static int
audit_once(const struct audit_settings *s)
{
	const struct audit_options o = { .repair = s->repair, .to_stdout = true, .progress = true };
	struct audit_counts c;
	char err[1024], summary[1024];
	enum audit_outcome outcome;
	int64_t start = mono_ms();

	outcome = audit_pass(s, &o, &c, err, sizeof(err));
	audit_summary(&c, &o, outcome, mono_ms() - start, summary, sizeof(summary));
	switch (outcome) {
	case AUDIT_CLEAN:
		log_info("%s", summary);
		return AUDIT_EXIT_CLEAN;
	case AUDIT_DRIFT:
		log_warnx("%s", summary);
		return AUDIT_EXIT_DRIFT;
	case AUDIT_INTERRUPTED:
		log_warnx("%s", summary);
		return AUDIT_EXIT_INTERRUPTED;
	case AUDIT_FAILED:
		break;
	}
	log_error("%s", err);
	log_error("%s", summary);
	return AUDIT_EXIT_UNREACHABLE;
}

/* Passes at an interval until SIGTERM or SIGINT, with the HTTP server for the metrics. */
static int
audit_every(const struct audit_settings *s)
{
	struct periodic *p;
	struct httpd *httpd;
	char err[512];

	if ((p = periodic_new(s)) == NULL)
		fatal("out of memory");
	if ((httpd = httpd_start(&s->http, routes, NULL, periodic_ready, p, err, sizeof(err))) == NULL)
		fatal("%s (set AUDIT_PORT to move it)", err);
	log_info("listening on %s:%ld, a pass every %ldms%s", s->http.bind, s->http.port, s->every_ms,
	    s->repair ? ", repairing" : "");

	periodic_run(p);

	log_info("shutting down");
	httpd_stop(httpd, s->drain_ms);
	periodic_free(p);
	return 0;
}

int
main(int argc, char **argv)
{
	struct audit_settings s;
	char where[512];
	int rc;

	if ((rc = audit_settings_load(argc, argv, &s)) >= 0)
		return rc;
	log_init("audit", s.log_level, s.log_format);
	mongo_driver_init();
	shutdown_signals_install();
	config_url_redact(s.mongodb_uri, where, sizeof(where));
	log_info("comparing PostgreSQL %s:%ld/%s with the copy %s.%s at %s, pages of %ld%s", s.pg.host,
	    s.pg.port, s.pg.db, s.mongodb_db, s.collection, where, s.page_size,
	    s.repair ? ", repairing through the outbox" : "");

	rc = s.every_ms > 0 ? audit_every(&s) : audit_once(&s);

	mongo_driver_cleanup();
	return rc;
}
