/* Settings of the outbox relay, read from the environment through one table. */
#ifndef RELAY_SETTINGS_H
#define RELAY_SETTINGS_H

#include <stdbool.h>

#include "config.h"
#include "log.h"
#include "pg.h"

/* The most batches the relay keeps in flight at once (RELAY_PIPELINE). */
#define RELAY_PIPELINE_MAX 4

struct relay_settings {
	struct pg_settings pg;
	const char *nats_url;
	const char *bind;
	long port;
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
	long lock_key;			/* advisory lock key naming "the relay of this database" */
	enum log_level log_level;
};

/* The settings table, bound to *s; it ends with a {NULL} entry and lives as long as s. */
const struct config_entry *relay_settings_table(struct relay_settings *s);

/* Checks what the table alone cannot (relations between values); fills err and returns -1 when
 * the combination is invalid. */
int relay_settings_check(const struct relay_settings *s, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
