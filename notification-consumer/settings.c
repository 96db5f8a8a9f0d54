/* The notification-consumer's settings table: every environment variable it reads, the demo's
 * names first, with its default, range and help. */
#include "settings.h"

#include <stddef.h>
#include <stdio.h>

#include "config.h"
#include "event_contract.h"
#include "replay.h"

/* The table's targets: one per process, copied out by consumer_settings_load(). A static table
 * bound to a static struct needs no copying at run time and no fixed-size buffer. */
static struct consumer_settings loaded = { .http.prefix = "NOTIFICATION_CONSUMER" };

static const struct config_entry table[] = {
	NATS_SETTINGS_ENTRIES(loaded.nats, "NATS server URL", false),
	{ "MONGODB_URI", CONFIG_STRING, &loaded.store.uri, "mongodb://localhost:27017", 0, 0,
	    "MongoDB (or FerretDB) connection string" },
	{ "MONGODB_DB", CONFIG_STRING, &loaded.store.db, "notifications_db", 0, 0,
	    "database that holds the copy" },
	{ "MONGODB_COLLECTION", CONFIG_STRING, &loaded.store.collection, "user_notifications", 0, 0,
	    "collection of the users' current state" },
	{ "MONGODB_HISTORY_COLLECTION", CONFIG_STRING, &loaded.store.history,
	    "user_notification_events", 0, 0, "collection of every applied event" },
	{ "MONGODB_TIMEOUT", CONFIG_MS, &loaded.store.timeout_ms, "2s", 100, 60000,
	    "server selection, connect and socket timeout for MongoDB" },
	{ "NOTIFICATION_CONSUMER_BIND", CONFIG_STRING, &loaded.http.bind, "127.0.0.1", 0, 0,
	    "address to listen on (an address other than loopback needs API_TOKENS_FILE)" },
	{ "NOTIFICATION_CONSUMER_PORT", CONFIG_INT, &loaded.http.port, "8081", 1, 65535,
	    "HTTP port" },
	HTTPD_SECURITY_ENTRIES(loaded.http, "NOTIFICATION_CONSUMER"),
	{ "CONSUMER_HTTP_THREADS", CONFIG_INT, &loaded.http.threads, "16", 1, 256,
	    "HTTP worker threads (a read waiting for min_version holds none)" },
	{ "NOTIFICATION_CONSUMER_MAX_BODY", CONFIG_INT, &loaded.http.max_body, "4096", 64, 16777216,
	    "largest request body in bytes (413 above; the consumer's endpoints take none)" },
	{ "NOTIFICATION_CONSUMER_CONN_TIMEOUT", CONFIG_INT, &loaded.http.conn_timeout_s, "30", 1, 3600,
	    "seconds a connection may go without a byte in or out (idle between requests, or an "
	    "answer the client does not read)" },
	{ "NOTIFICATION_CONSUMER_MAX_CONNECTIONS", CONFIG_INT, &loaded.http.max_connections, "1024", 1,
	    65536, "concurrent HTTP connections in all" },
	{ "NOTIFICATION_CONSUMER_MAX_CONNECTIONS_PER_IP", CONFIG_INT,
	    &loaded.http.max_connections_per_ip, "64", 1, 65536,
	    "concurrent HTTP connections from one address" },
	HTTPD_LIMIT_ENTRIES(loaded.http, "NOTIFICATION_CONSUMER"),
	{ "NOTIFICATION_CONSUMER_DRAIN_TIMEOUT", CONFIG_MS, &loaded.drain_ms, "3s", 0, 9000,
	    "how long HTTP requests in flight may finish at shutdown" },
	{ "CONSUMER_STREAM", CONFIG_STRING, &loaded.stream, EVENT_STREAM, 0, 0,
	    "JetStream stream of user events (created by the relay)" },
	{ "CONSUMER_DURABLE", CONFIG_STRING, &loaded.durable, "notification-consumer", 0, 0,
	    "name of the durable pull consumer" },
	{ "CONSUMER_DLQ_STREAM", CONFIG_STRING, &loaded.dlq_stream, EVENT_DLQ_STREAM, 0, 0,
	    "stream that receives poison events" },
	{ "CONSUMER_DLQ_SUBJECT_PREFIX", CONFIG_STRING, &loaded.dlq_prefix, "dlq", 0, 0,
	    "poison events are published on <prefix>.<original subject>" },
	{ "CONSUMER_NATS_TIMEOUT", CONFIG_MS, &loaded.nats_timeout_ms, "5s", 100, 60000,
	    "longest wait for JetStream to answer one request (an ack, a dead letter, a look-up)" },
	{ "CONSUMER_BATCH", CONFIG_INT, &loaded.batch, "64", 1, 1000,
	    "messages asked for in one pull request" },
	{ "CONSUMER_LANES", CONFIG_INT, &loaded.lanes, "4", 1, 64,
	    "apply threads; a user's events always go to the same one, in order" },
	{ "CONSUMER_ACK_WAIT", CONFIG_MS, &loaded.ack_wait_ms, "30s", 1000, 3600000,
	    "time the server waits for an ack before redelivering (set when the consumer is created)" },
	{ "CONSUMER_MAX_ACK_PENDING", CONFIG_INT, &loaded.max_ack_pending, "1000", 1, 1000000,
	    "most unacknowledged messages the server hands out (set when the consumer is created)" },
	{ "CONSUMER_FETCH_EXPIRY", CONFIG_MS, &loaded.fetch_expiry_ms, "1s", 100, 60000,
	    "how long one pull request waits for messages" },
	{ "CONSUMER_BACKOFF_MIN", CONFIG_MS, &loaded.backoff_min_ms, "100ms", 1, 60000,
	    "first wait before a retry after MongoDB or JetStream failed (it doubles on each failure)" },
	{ "CONSUMER_BACKOFF_MAX", CONFIG_MS, &loaded.backoff_max_ms, "5s", 1, 600000,
	    "longest wait before a retry after failures" },
	{ "CONSUMER_PING_INTERVAL", CONFIG_MS, &loaded.ping_interval_ms, "2s", 100, 600000,
	    "how often MongoDB is pinged while it answers (fetching stops when it does not)" },
	{ "CONSUMER_LAG_INTERVAL", CONFIG_MS, &loaded.lag_interval_ms, "2s", 100, 600000,
	    "how often the lag gauges are refreshed" },
	{ "CONSUMER_READ_WAIT_MAX", CONFIG_MS, &loaded.read_wait_max_ms, "5s", 0, 60000,
	    "longest a read with min_version waits (default and cap of ?wait=)" },
	{ "CONSUMER_MAX_WAITERS", CONFIG_INT, &loaded.max_waiters, "1000", 1, 100000,
	    "reads with min_version that may wait at once (503 with Retry-After beyond)" },
	{ "CONSUMER_WAIT_RECHECK", CONFIG_MS, &loaded.wait_recheck_ms, "100ms", 10, 60000,
	    "how often a process that does not apply (a stand-by) reads the copy for its waiting "
	    "reads" },
	{ "CONSUMER_RECHECK_AFTER", CONFIG_MS, &loaded.recheck_ms, "1s", 100, 60000,
	    "when applied writes are read back to undo another writer's older one" },
	{ "CONSUMER_LEASE_TTL", CONFIG_MS, &loaded.lease_ttl_ms, "5s", 1000, 600000,
	    "one process applies at a time; a stand-by takes over this long after it vanished" },
	{ "CONSUMER_LEASE_TIMEOUT", CONFIG_MS, &loaded.lease_timeout_ms, "2s", 100, 60000,
	    "longest wait for JetStream to answer one read or write of the lease" },
	{ "CONSUMER_GAP_WAIT", CONFIG_MS, &loaded.gap_wait_ms, "0", 0, 86400000,
	    "how long an event waits for a missing earlier version of its user before it is applied "
	    "anyway (0: twice CONSUMER_ACK_WAIT plus 5s)" },
	{ "CONSUMER_HOLD_DELAY_MIN", CONFIG_MS, &loaded.hold_delay_min_ms, "250ms", 1, 3600000,
	    "an event waiting for a missing version comes back after this delay, doubling each time" },
	{ "CONSUMER_HOLD_DELAY_MAX", CONFIG_MS, &loaded.hold_delay_max_ms, "4s", 1, 3600000,
	    "longest delay before an event waiting for a missing version comes back" },
	{ "CONSUMER_REPLAY_BATCH", CONFIG_INT, &loaded.replay_batch, "256", 1, 10000,
	    "messages replay asks for in one pull request" },
	{ "CONSUMER_REPLAY_REORDER_WINDOW", CONFIG_INT, &loaded.replay_reorder_seqs, "4096", 0,
	    10000000, "stream sequences an early event waits in replay's memory for the versions "
	    "before it (then it is applied over the gap)" },
	{ "CONSUMER_REPLAY_PROGRESS_INTERVAL", CONFIG_MS, &loaded.replay_progress_ms, "2s", 100,
	    3600000, "how often replay logs its progress when stderr is not a terminal" },
	{ "CONSUMER_REPLAY_CONNECT_TIMEOUT", CONFIG_MS, &loaded.replay_connect_timeout_ms, "10s", 100,
	    3600000, "how long replay waits for NATS at its start before it gives up" },
	LOG_SETTINGS_ENTRIES(loaded.log_level, loaded.log_format),
	{ NULL, 0, NULL, NULL, 0, 0, NULL },
};

/* What the table alone cannot check: relations between values. It also derives CONSUMER_GAP_WAIT,
 * so it writes to the loaded settings rather than reading them through arg. */
static int
resolve(const void *arg, char *err, size_t errlen)
{
	struct consumer_settings *s = &loaded;

	(void)arg;
	if (httpd_config_check(&s->http, err, errlen) != 0)
		return -1;
	if (natsconn_settings_check(&s->nats, err, errlen) != 0)
		return -1;
	/* A version that a crashed process held comes back only after the ack wait; twice that
	 * covers a second crash or pause on the way, and the margin a slow batch. */
	if (s->gap_wait_ms == 0)
		s->gap_wait_ms = 2 * s->ack_wait_ms + 5000;
	if (s->gap_wait_ms <= s->ack_wait_ms) {
		snprintf(err, errlen, "CONSUMER_GAP_WAIT (%ldms) must be longer than CONSUMER_ACK_WAIT "
		    "(%ldms): a version that a crashed process held comes back only after the ack wait",
		    s->gap_wait_ms, s->ack_wait_ms);
		return -1;
	}
	if (s->backoff_min_ms > s->backoff_max_ms) {
		snprintf(err, errlen, "invalid CONSUMER_BACKOFF_MIN %ldms: more than CONSUMER_BACKOFF_MAX "
		    "%ldms", s->backoff_min_ms, s->backoff_max_ms);
		return -1;
	}
	if (s->hold_delay_min_ms > s->hold_delay_max_ms) {
		snprintf(err, errlen, "invalid CONSUMER_HOLD_DELAY_MIN %ldms: more than "
		    "CONSUMER_HOLD_DELAY_MAX %ldms", s->hold_delay_min_ms, s->hold_delay_max_ms);
		return -1;
	}
	return 0;
}

static const struct cli cli = {
	.prog = "notification-consumer",
	.version = VERSION,
	.summary = "Applies the events of the " EVENT_STREAM " stream to MongoDB exactly once in effect "
	    "and\nserves the copy on /notifications; the replay command rebuilds it from the stream.",
	.commands = REPLAY_USAGE,
	.settings = table,
	.validate = resolve,
};

int
consumer_settings_load(int argc, char **argv, struct consumer_settings *out, int *argi)
{
	int rc;

	if ((rc = cli_start(&cli, argc, argv, argi)) >= 0)
		return rc;
	*out = loaded;
	return -1;
}
