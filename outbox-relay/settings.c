/* The relay's settings table: every environment variable it reads, with defaults and help. */
#include "settings.h"

#include <stdio.h>

static struct config_entry table[32];

const struct config_entry *
relay_settings_table(struct relay_settings *s)
{
	const struct config_entry t[] = {
		PG_SETTINGS_ENTRIES(s->pg),
		{ "NATS_URL", CONFIG_STRING, &s->nats_url, "nats://localhost:4222", 0, 0,
		    "NATS server URL" },
		{ "OUTBOX_RELAY_BIND", CONFIG_STRING, &s->bind, "0.0.0.0", 0, 0,
		    "address of the HTTP server (/healthz, /readyz, /metrics)" },
		{ "OUTBOX_RELAY_PORT", CONFIG_INT, &s->port, "8082", 1, 65535, "port of the HTTP server" },
		{ "RELAY_BATCH_SIZE", CONFIG_INT, &s->batch_size, "1000", 1, 10000,
		    "outbox rows claimed and published per transaction" },
		{ "RELAY_PIPELINE", CONFIG_INT, &s->pipeline, "2", 1, RELAY_PIPELINE_MAX,
		    "batches in flight at once, each on its own PostgreSQL connection (1: one at a time)" },
		{ "RELAY_PUBLISH_TIMEOUT", CONFIG_MS, &s->publish_timeout_ms, "5s", 100, 600000,
		    "longest wait for a PubAck before the batch is rolled back" },
		{ "RELAY_DUPLICATE_WINDOW", CONFIG_MS, &s->duplicate_window_ms, "2m", 1000, 86400000,
		    "JetStream duplicate window of the stream (republished events inside it are dropped)" },
		{ "RELAY_STREAM_REPLICAS", CONFIG_INT, &s->stream_replicas, "1", 1, 5,
		    "replicas of the stream (more than 1 needs a JetStream cluster)" },
		{ "RELAY_STREAM_MAX_AGE", CONFIG_MS, &s->stream_max_age_ms, "0", 0, 3153600000000L,
		    "oldest event the stream keeps (0: unlimited; a limit can drop unconsumed events)" },
		{ "RELAY_STREAM_MAX_BYTES", CONFIG_INT, &s->stream_max_bytes, "0", 0, 1L << 50,
		    "most bytes the stream holds (0: unlimited; when full, publishing is refused)" },
		{ "RELAY_POLL_MIN", CONFIG_MS, &s->poll_min_ms, "20ms", 1, 60000,
		    "shortest wait between outbox polls after a partial batch" },
		{ "RELAY_POLL_MAX", CONFIG_MS, &s->poll_max_ms, "1s", 1, 600000,
		    "longest wait between outbox polls when idle (a nudge wakes the relay sooner)" },
		{ "RELAY_LOCK_POLL", CONFIG_MS, &s->lock_poll_ms, "250ms", 10, 60000,
		    "how often a standby tries to become the leader" },
		{ "RELAY_BACKLOG_INTERVAL", CONFIG_MS, &s->backlog_interval_ms, "2s", 100, 600000,
		    "how often the backlog gauges are refreshed" },
		{ "RELAY_LOCK_KEY", CONFIG_INT, &s->lock_key, "7305463", -2147483647L, 2147483647L,
		    "PostgreSQL advisory lock key that elects the leader" },
		{ "LOG_LEVEL", CONFIG_LEVEL, &s->log_level, "info", 0, 0,
		    "debug, info, warn or error" },
		{ NULL, 0, NULL, NULL, 0, 0, NULL },
	};

	_Static_assert(sizeof(t) <= sizeof(table), "settings table too small");
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		table[i] = t[i];
	return table;
}

int
relay_settings_check(const struct relay_settings *s, char *err, size_t errlen)
{
	if (s->poll_min_ms > s->poll_max_ms) {
		snprintf(err, errlen, "invalid RELAY_POLL_MIN %ldms: more than RELAY_POLL_MAX %ldms",
		    s->poll_min_ms, s->poll_max_ms);
		return -1;
	}
	return 0;
}
