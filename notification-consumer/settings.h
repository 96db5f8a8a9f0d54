/* Settings of the notification-consumer, read from the environment through one table that also
 * prints --help. */
#ifndef CONSUMER_SETTINGS_H
#define CONSUMER_SETTINGS_H

#include "httpd.h"
#include "log.h"
#include "natsconn.h"
#include "store.h"

struct consumer_settings {
	struct store_config store;	/* MongoDB; appname and instance are left to the caller */
	struct httpd_config http;	/* the read API, /healthz, /readyz and /metrics */
	long drain_ms;			/* how long HTTP requests in flight may finish at shutdown */
	struct nats_settings nats;
	long nats_timeout_ms;		/* longest wait for JetStream's answer to one request */
	const char *stream;
	const char *durable;
	const char *dlq_stream;
	const char *dlq_prefix;
	long batch;			/* messages asked for in one pull request */
	long lanes;			/* apply threads; a user's events always go to the same one */
	long ack_wait_ms;		/* set when the durable consumer is created */
	long max_ack_pending;		/* set when the durable consumer is created */
	long fetch_expiry_ms;		/* how long one pull request waits */
	long backoff_min_ms;		/* the wait after a failure, doubling... */
	long backoff_max_ms;		/* ...up to this */
	long ping_interval_ms;		/* how often MongoDB is pinged while it answers */
	long lag_interval_ms;		/* how often the lag gauges are refreshed */
	long gap_wait_ms;		/* how long an event waits for a missing version; never 0 */
	long hold_delay_min_ms;		/* when an event held back comes back, doubling... */
	long hold_delay_max_ms;		/* ...up to this */
	long recheck_ms;		/* when applied writes are read back */
	long lease_ttl_ms;
	long lease_timeout_ms;		/* longest wait for one lease read or write */
	long read_wait_max_ms;		/* default and cap of ?wait= */
	long max_waiters;		/* reads with min_version waiting at once */
	long wait_recheck_ms;		/* how often a stand-by reads the copy for its waiting reads */
	long replay_batch;		/* messages replay asks for in one pull request */
	long replay_reorder_seqs;	/* how far behind an early event replay waits for its versions */
	long replay_progress_ms;	/* how often replay logs its progress when not on a terminal */
	long replay_connect_timeout_ms;	/* how long replay waits for NATS at its start */
	enum log_level log_level;
	enum log_format log_format;
};

/* The start of the notification-consumer's main(): --help, --version and --check, then every
 * setting read from the environment into *out (its strings point into the environment or the
 * table's defaults, and live as long as the process) and checked against each other, with
 * CONSUMER_GAP_WAIT derived from CONSUMER_ACK_WAIT when it is 0. Returns -1 when the process
 * should go on, with *argi at its command word (argc when there is none), else the exit status for
 * main() to return: 0 after --help, --version or a valid --check, 2 for bad usage or an invalid
 * setting (the reason printed on stderr). */
int consumer_settings_load(int argc, char **argv, struct consumer_settings *out, int *argi)
    __attribute__((warn_unused_result));

#endif
