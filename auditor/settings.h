/* Settings of audit, from the environment through one table that also prints --help, and its
 * command line (--repair, --every). */
#ifndef AUDIT_SETTINGS_H
#define AUDIT_SETTINGS_H

#include <stdbool.h>

#include "httpd.h"
#include "log.h"
#include "pg.h"

/* The exit statuses scripts can use (--help and docs/audit.md say the same). */
enum audit_exit {
	AUDIT_EXIT_CLEAN = 0,		/* every user compared, no drift */
	AUDIT_EXIT_DRIFT = 1,		/* drift found (with --repair: its events written, not applied yet) */
	AUDIT_EXIT_USAGE = 2,		/* bad arguments or settings */
	AUDIT_EXIT_UNREACHABLE = 3,	/* PostgreSQL or MongoDB could not be reached or read */
	AUDIT_EXIT_INTERRUPTED = 4,	/* SIGINT or SIGTERM before the end: nothing can be concluded */
};

struct audit_settings {
	struct pg_settings pg;
	const char *mongodb_uri;	/* may hold a password: show it through config_url_redact() */
	const char *mongodb_db;
	const char *collection;		/* one document per user, _id = user id */
	long mongodb_timeout_ms;	/* server selection and connect (socket: five times) */
	struct httpd_config http;	/* --every only: /healthz, /readyz, /metrics */
	long drain_ms;
	long page_size;			/* users read per page on each side */
	long recheck_ms;		/* how long a user that differs is given before its second look */
	long progress_ms;		/* between progress lines when stderr is not a terminal */
	enum log_level log_level;
	enum log_format log_format;
	/* From the command line. */
	bool repair;			/* --repair */
	long every_ms;			/* --every; 0: one pass, then exit */
};

/* The start of audit's main(): its own arguments, then --help, --version and --check, then every
 * setting read from the environment into *out (its strings point into the environment or the
 * table's defaults, and live as long as the process) and checked, MONGODB_URI parsed. Returns -1
 * when the process should go on, else the exit status for main() to return: 0 after --help,
 * --version or a valid --check, AUDIT_EXIT_USAGE for bad usage or an invalid setting (the reason
 * printed on stderr). */
int audit_settings_load(int argc, char **argv, struct audit_settings *out)
    __attribute__((warn_unused_result));

#endif
