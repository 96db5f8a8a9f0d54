/* Every setting of the notification-consumer, with the demo's environment names first. */
#include "settings.h"

#include <stddef.h>
#include <stdio.h>

#include "event_contract.h"

struct consumer_settings settings;

const struct config_entry settings_table[] = {
	{ "NATS_URL", CONFIG_STRING, &settings.nats_url, "nats://localhost:4222", 0, 0,
	    "NATS server URL" },
	{ "MONGODB_URI", CONFIG_STRING, &settings.mongodb_uri, "mongodb://localhost:27017", 0, 0,
	    "MongoDB (or FerretDB) connection string" },
	{ "MONGODB_DB", CONFIG_STRING, &settings.mongodb_db, "notifications_db", 0, 0,
	    "database that holds the copy" },
	{ "MONGODB_COLLECTION", CONFIG_STRING, &settings.collection, "user_notifications", 0, 0,
	    "collection of the users' current state" },
	{ "MONGODB_HISTORY_COLLECTION", CONFIG_STRING, &settings.history, "user_notification_events",
	    0, 0, "collection of every applied event" },
	{ "MONGODB_TIMEOUT", CONFIG_MS, &settings.mongo_timeout_ms, "2s", 100, 60000,
	    "server selection, connect and socket timeout for MongoDB" },
	{ "NOTIFICATION_CONSUMER_BIND", CONFIG_STRING, &settings.bind, "0.0.0.0", 0, 0,
	    "address the HTTP server listens on" },
	{ "NOTIFICATION_CONSUMER_PORT", CONFIG_INT, &settings.port, "8081", 1, 65535,
	    "HTTP port" },
	{ "CONSUMER_HTTP_THREADS", CONFIG_INT, &settings.http_threads, "16", 1, 256,
	    "HTTP worker threads (a read waiting for min_version holds one)" },
	{ "CONSUMER_STREAM", CONFIG_STRING, &settings.stream, EVENT_STREAM, 0, 0,
	    "JetStream stream of user events (created by the relay)" },
	{ "CONSUMER_DURABLE", CONFIG_STRING, &settings.durable, "notification-consumer", 0, 0,
	    "name of the durable pull consumer" },
	{ "CONSUMER_DLQ_STREAM", CONFIG_STRING, &settings.dlq_stream, EVENT_DLQ_STREAM, 0, 0,
	    "stream that receives poison events" },
	{ "CONSUMER_DLQ_SUBJECT_PREFIX", CONFIG_STRING, &settings.dlq_prefix, "dlq", 0, 0,
	    "poison events are published on <prefix>.<original subject>" },
	{ "CONSUMER_BATCH", CONFIG_INT, &settings.batch, "64", 1, 1000,
	    "messages asked for in one pull request" },
	{ "CONSUMER_ACK_WAIT", CONFIG_MS, &settings.ack_wait_ms, "30s", 1000, 3600000,
	    "time the server waits for an ack before redelivering (set when the consumer is created)" },
	{ "CONSUMER_MAX_ACK_PENDING", CONFIG_INT, &settings.max_ack_pending, "1000", 1, 1000000,
	    "most unacknowledged messages the server hands out (set when the consumer is created)" },
	{ "CONSUMER_FETCH_EXPIRY", CONFIG_MS, &settings.fetch_expiry_ms, "1s", 100, 60000,
	    "how long one pull request waits for messages" },
	{ "CONSUMER_READ_WAIT_MAX", CONFIG_MS, &settings.read_wait_max_ms, "5s", 0, 60000,
	    "longest a read with min_version waits (default and cap of ?wait=)" },
	{ "CONSUMER_RECHECK_AFTER", CONFIG_MS, &settings.recheck_ms, "1s", 100, 60000,
	    "when applied writes are read back to undo another writer's older one" },
	{ "CONSUMER_LEASE_TTL", CONFIG_MS, &settings.lease_ttl_ms, "5s", 1000, 600000,
	    "one process applies at a time; a stand-by takes over this long after it vanished" },
	{ "CONSUMER_GAP_WAIT", CONFIG_MS, &settings.gap_wait_ms, "0", 0, 86400000,
	    "how long an event waits for a missing earlier version of its user before it is applied "
	    "anyway (0: twice CONSUMER_ACK_WAIT plus 5s)" },
	{ "LOG_LEVEL", CONFIG_LEVEL, &settings.log_level, "info", 0, 0,
	    "debug, info, warn or error" },
	{ NULL, 0, NULL, NULL, 0, 0, NULL },
};

int
settings_resolve(const void *arg, char *err, size_t errlen)
{
	(void)arg;
	/* A version that a crashed process held comes back only after the ack wait; twice that
	 * covers a second crash or pause on the way, and the margin a slow batch. */
	if (settings.gap_wait_ms == 0)
		settings.gap_wait_ms = 2 * settings.ack_wait_ms + 5000;
	if (settings.gap_wait_ms <= settings.ack_wait_ms) {
		snprintf(err, errlen, "CONSUMER_GAP_WAIT (%ldms) must be longer than CONSUMER_ACK_WAIT "
		    "(%ldms): a version that a crashed process held comes back only after the ack wait",
		    settings.gap_wait_ms, settings.ack_wait_ms);
		return -1;
	}
	return 0;
}
