/* Settings of outbox-relay, read from the environment through one table that also prints --help. */
#ifndef RELAY_SETTINGS_H
#define RELAY_SETTINGS_H

#include "httpd.h"
#include "log.h"
#include "natsconn.h"
#include "pg.h"

/* The most batches the relay keeps in flight at once (RELAY_PIPELINE). */
#define RELAY_PIPELINE_MAX 4

struct relay_settings {
	struct pg_settings pg;
	struct httpd_config http;	/* /healthz, /readyz and /metrics */
	long drain_ms;			/* how long HTTP requests in flight may finish at shutdown */
	struct nats_settings nats;
	long batch_size;
	long pipeline;			/* batches in flight at once, each on its own connection */
	long publish_timeout_ms;	/* MaxWait of every async publish */
	long duplicate_window_ms;
	long stream_replicas;
	long stream_max_age_ms;		/* 0: unlimited */
	long stream_max_bytes;		/* 0: unlimited */
	long poll_min_ms;
	long poll_max_ms;
	long lock_poll_ms;		/* how often a standby tries to take the leader lock */
	long backlog_interval_ms;	/* how often the backlog gauges are refreshed */
	long retain_ms;			/* how long published rows are kept (longer than the window) */
	long sweep_batch;		/* most published rows deleted per sweep statement */
	long stream_check_ms;		/* how often the leader checks the stream for lost events */
	long lock_key;			/* advisory lock key naming "the relay of this database" */
	enum log_level log_level;
	enum log_format log_format;
};

/* The start of outbox-relay's main(): --help, --version and --check, then every setting read from
 * the environment into *out (its strings point into the environment or the table's defaults, and
 * live as long as the process) and checked against each other. Returns -1 when the process should
 * go on, with *argi at its command word (argc when there is none), else the exit status for main()
 * to return: 0 after --help, --version or a valid --check, 2 for bad usage or an invalid setting
 * (the reason printed on stderr). */
int relay_settings_load(int argc, char **argv, struct relay_settings *out, int *argi)
    __attribute__((warn_unused_result));

#endif
