/* The notification-consumer's settings: one table read from the environment. */
#ifndef CONSUMER_SETTINGS_H
#define CONSUMER_SETTINGS_H

#include <stdbool.h>

#include "config.h"
#include "log.h"

struct consumer_settings {
	const char *bind;
	long port;
	long http_threads;
	const char *nats_url;
	const char *mongodb_uri;
	const char *mongodb_db;
	const char *collection;
	const char *history;
	const char *stream;
	const char *durable;
	const char *dlq_stream;
	const char *dlq_prefix;
	long batch;
	long ack_wait_ms;
	long max_ack_pending;
	long fetch_expiry_ms;
	long mongo_timeout_ms;
	long read_wait_max_ms;
	long recheck_ms;
	long lease_ttl_ms;
	long gap_wait_ms;	/* never 0 once settings_resolve() ran */
	enum log_level log_level;
};

extern struct consumer_settings settings;
extern const struct config_entry settings_table[];

/* The struct cli validate hook: fills in CONSUMER_GAP_WAIT from CONSUMER_ACK_WAIT when it is 0,
 * and refuses one that is not longer than the ack wait. arg is unused. */
int settings_resolve(const void *arg, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
