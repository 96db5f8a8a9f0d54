/* outbox-relay's settings table: every environment variable it reads, with its default, range and help. */
#include "settings.h"

#include <stdio.h>

#include "config.h"
#include "event_contract.h"
#include "snapshot.h"

/* The table's targets: one per process, copied out by relay_settings_load(). A static table bound
 * to a static struct needs no copying at run time and no fixed-size buffer. */
static struct relay_settings loaded = { .http.prefix = "OUTBOX_RELAY" };

static const struct config_entry table[] = {
	PG_SETTINGS_ENTRIES(loaded.pg, PG_ROLE_RELAY),
	NATS_SETTINGS_ENTRIES(loaded.nats, "NATS server URL", false),
	{ "OUTBOX_RELAY_BIND", CONFIG_STRING, &loaded.http.bind, "127.0.0.1", 0, 0,
	    "address to listen on (an address other than loopback needs API_TOKENS_FILE)" },
	{ "OUTBOX_RELAY_PORT", CONFIG_INT, &loaded.http.port, "8082", 1, 65535,
	    "port of the HTTP server" },
	HTTPD_SECURITY_ENTRIES(loaded.http, "OUTBOX_RELAY"),
	{ "OUTBOX_RELAY_THREADS", CONFIG_INT, &loaded.http.threads, "2", 1, 256,
	    "HTTP worker threads" },
	{ "OUTBOX_RELAY_MAX_BODY", CONFIG_INT, &loaded.http.max_body, "1024", 64, 16777216,
	    "largest request body in bytes (413 above; the relay's endpoints take none)" },
	{ "OUTBOX_RELAY_CONN_TIMEOUT", CONFIG_INT, &loaded.http.conn_timeout_s, "10", 1, 3600,
	    "seconds a connection may go without a byte in or out (idle between requests, or an "
	    "answer the client does not read)" },
	{ "OUTBOX_RELAY_MAX_CONNECTIONS", CONFIG_INT, &loaded.http.max_connections, "64", 1, 65536,
	    "concurrent HTTP connections in all" },
	{ "OUTBOX_RELAY_MAX_CONNECTIONS_PER_IP", CONFIG_INT, &loaded.http.max_connections_per_ip, "8",
	    1, 65536, "concurrent HTTP connections from one address" },
	HTTPD_LIMIT_ENTRIES(loaded.http, "OUTBOX_RELAY"),
	{ "OUTBOX_RELAY_DRAIN_TIMEOUT", CONFIG_MS, &loaded.drain_ms, "1s", 0, 9000,
	    "how long HTTP requests in flight may finish at shutdown" },
	{ "RELAY_BATCH_SIZE", CONFIG_INT, &loaded.batch_size, "1000", 1, 10000,
	    "outbox rows claimed and published per transaction" },
	{ "RELAY_PIPELINE", CONFIG_INT, &loaded.pipeline, "2", 1, RELAY_PIPELINE_MAX,
	    "batches in flight at once, each on its own PostgreSQL connection (1: one at a time)" },
	{ "RELAY_PUBLISH_TIMEOUT", CONFIG_MS, &loaded.publish_timeout_ms, "5s", 100, 600000,
	    "longest wait for a PubAck before the batch is rolled back" },
	{ "RELAY_DUPLICATE_WINDOW", CONFIG_MS, &loaded.duplicate_window_ms, "2m", 1000, 86400000,
	    "JetStream duplicate window of the stream (republished events inside it are dropped)" },
	{ "RELAY_STREAM_REPLICAS", CONFIG_INT, &loaded.stream_replicas, "1", 1, 5,
	    "replicas of the stream (more than 1 needs a JetStream cluster)" },
	{ "RELAY_STREAM_MAX_AGE", CONFIG_MS, &loaded.stream_max_age_ms, "0", 0, 3153600000000L,
	    "oldest event the stream keeps: it bounds how long a deleted user's name and email stay "
	    "in its older events, how far back a replay rebuilds, and how long the consumer may be "
	    "down without losing events (0: unlimited, so nothing unread is ever dropped)" },
	{ "RELAY_STREAM_MAX_BYTES", CONFIG_INT, &loaded.stream_max_bytes, "0", 0, 1L << 50,
	    "most bytes the stream holds (0: unlimited; when full, publishing is refused)" },
	{ "RELAY_POLL_MIN", CONFIG_MS, &loaded.poll_min_ms, "20ms", 1, 60000,
	    "shortest wait between outbox polls after a partial batch" },
	{ "RELAY_POLL_MAX", CONFIG_MS, &loaded.poll_max_ms, "1s", 1, 600000,
	    "longest wait between outbox polls when idle (a nudge wakes the relay sooner)" },
	{ "RELAY_LOCK_POLL", CONFIG_MS, &loaded.lock_poll_ms, "250ms", 10, 60000,
	    "how often a standby tries to become the leader" },
	{ "RELAY_BACKLOG_INTERVAL", CONFIG_MS, &loaded.backlog_interval_ms, "2s", 100, 600000,
	    "how often the backlog gauges are refreshed" },
	{ "RELAY_RETAIN", CONFIG_MS, &loaded.retain_ms, "5m", 1000, 2592000000L,
	    "how long published rows are kept, to publish again what the stream loses (longer than "
	    "RELAY_DUPLICATE_WINDOW plus RELAY_STREAM_CHECK_INTERVAL, and than the server's sync "
	    "interval)" },
	{ "RELAY_SWEEP_BATCH", CONFIG_INT, &loaded.sweep_batch, "1000", 1, 100000,
	    "most published rows deleted by one sweep statement (its own short transaction)" },
	{ "RELAY_STREAM_CHECK_INTERVAL", CONFIG_MS, &loaded.stream_check_ms, "5s", 100, 600000,
	    "how often the leader checks that the stream still holds what it acknowledged (also "
	    "after every NATS reconnect)" },
	{ "RELAY_LOCK_KEY", CONFIG_INT, &loaded.lock_key, "7305463", -2147483647L, 2147483647L,
	    "PostgreSQL advisory lock key that elects the leader" },
	LOG_SETTINGS_ENTRIES(loaded.log_level, loaded.log_format),
	{ NULL, 0, NULL, NULL, 0, 0, NULL },
};

/* What the table alone cannot check: relations between values. */
static int
check(const void *arg, char *err, size_t errlen)
{
	const struct relay_settings *s = arg;

	if (httpd_config_check(&s->http, err, errlen) != 0)
		return -1;
	if (natsconn_settings_check(&s->nats, err, errlen) != 0)
		return -1;
	if (pg_settings_check(&s->pg, err, errlen) != 0)
		return -1;
	/* JetStream refuses a duplicate window longer than the stream's MaxAge. */
	if (s->stream_max_age_ms > 0 && s->stream_max_age_ms < s->duplicate_window_ms) {
		snprintf(err, errlen, "invalid RELAY_STREAM_MAX_AGE %ldms: shorter than "
		    "RELAY_DUPLICATE_WINDOW (%ldms)", s->stream_max_age_ms, s->duplicate_window_ms);
		return -1;
	}
	if (s->poll_min_ms > s->poll_max_ms) {
		snprintf(err, errlen, "invalid RELAY_POLL_MIN %ldms: more than RELAY_POLL_MAX %ldms",
		    s->poll_min_ms, s->poll_max_ms);
		return -1;
	}
	/* Events a purge removed can be published again only once JetStream forgets their ids (the
	 * duplicate window, and a second to spare, after they were published), at the next check:
	 * their rows must still be kept then. */
	if (s->retain_ms <= s->duplicate_window_ms + s->stream_check_ms + 1000) {
		snprintf(err, errlen, "invalid RELAY_RETAIN %ldms: published rows must be kept longer than "
		    "RELAY_DUPLICATE_WINDOW (%ldms) plus RELAY_STREAM_CHECK_INTERVAL (%ldms) and a second, "
		    "or events lost in a purge could be swept before they are published again",
		    s->retain_ms, s->duplicate_window_ms, s->stream_check_ms);
		return -1;
	}
	return 0;
}

static const struct cli cli = {
	.prog = "outbox-relay",
	.version = VERSION,
	.summary = "Relays every committed outbox row to the JetStream stream " EVENT_STREAM " at least once, in id\n"
	    "order, deduplicated by event id; one relay per database leads, the others stand by.",
	.commands = "  (none)                          run the relay\n"
	    SNAPSHOT_USAGE,
	.settings = table,
	.validate = check,
	.validate_arg = &loaded,
};

int
relay_settings_load(int argc, char **argv, struct relay_settings *out, int *argi)
{
	int rc;

	if ((rc = cli_start(&cli, argc, argv, argi)) >= 0)
		return rc;
	*out = loaded;
	return -1;
}
