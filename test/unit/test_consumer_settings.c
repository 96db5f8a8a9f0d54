/* Unit tests of the notification-consumer's settings and arguments: the defaults, CONSUMER_GAP_WAIT
 * derived from the ack wait or set and never shorter than it, the pairs that must be in order, and
 * the replay command's arguments, read before anything starts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../notification-consumer/replay.h"
#include "../../notification-consumer/settings.h"
#include "unit.h"

/* What the last call printed on stdout and stderr. */
static char printed[16384];

/* Runs consumer_settings_load() with argv and the environment as it is, catching what it prints. */
static int
load_argv(struct consumer_settings *s, int argc, char **argv)
{
	FILE *tmp = tmpfile();
	int out = dup(1), err = dup(2), argi, rc;
	size_t n;

	fflush(stdout);
	fflush(stderr);
	dup2(fileno(tmp), 1);
	dup2(fileno(tmp), 2);
	memset(s, 0, sizeof(*s));
	rc = consumer_settings_load(argc, argv, s, &argi);
	fflush(stdout);
	fflush(stderr);
	dup2(out, 1);
	dup2(err, 2);
	close(out);
	close(err);
	rewind(tmp);
	n = fread(printed, 1, sizeof(printed) - 1, tmp);
	printed[n] = '\0';
	fclose(tmp);
	return rc;
}

static int
load(struct consumer_settings *s)
{
	char *argv[] = { "notification-consumer", NULL };

	return load_argv(s, 1, argv);
}

/* Loads with ack and gap (NULL: unset). */
static int
load_waits(struct consumer_settings *s, const char *ack, const char *gap)
{
	if (ack != NULL)
		setenv("CONSUMER_ACK_WAIT", ack, 1);
	else
		unsetenv("CONSUMER_ACK_WAIT");
	if (gap != NULL)
		setenv("CONSUMER_GAP_WAIT", gap, 1);
	else
		unsetenv("CONSUMER_GAP_WAIT");
	return load(s);
}

static void
test_defaults(void)
{
	struct consumer_settings s;

	CHECK(load(&s) == -1);
	CHECK_STR(s.nats.url, "nats://localhost:4222");
	CHECK_STR(s.store.uri, "mongodb://localhost:27017");
	CHECK_STR(s.store.db, "notifications_db");
	CHECK_STR(s.store.collection, "user_notifications");
	CHECK_STR(s.store.history, "user_notification_events");
	CHECK(s.store.timeout_ms == 2000);
	CHECK_STR(s.http.bind, "127.0.0.1");
	CHECK(s.http.port == 8081);
	CHECK(s.http.threads == 16);
	CHECK(s.http.max_body == 4096);
	CHECK(s.http.conn_timeout_s == 30);
	CHECK(s.http.max_connections == 1024);
	CHECK(s.http.max_connections_per_ip == 64);
	CHECK(s.http.request_timeout_ms == 10000);
	CHECK(s.http.rate_limit == 1000 && s.http.rate_burst == 2000 && !s.http.rate_limit_loopback);
	CHECK(s.drain_ms == 3000);
	CHECK_STR(s.stream, "USER_EVENTS");
	CHECK_STR(s.durable, "notification-consumer");
	CHECK_STR(s.dlq_stream, "USER_EVENTS_DLQ");
	CHECK_STR(s.dlq_prefix, "dlq");
	CHECK(s.nats_timeout_ms == 5000);
	CHECK(s.batch == 64);
	CHECK(s.ack_wait_ms == 30000);
	CHECK(s.max_ack_pending == 1000);
	CHECK(s.fetch_expiry_ms == 1000);
	CHECK(s.backoff_min_ms == 100);
	CHECK(s.backoff_max_ms == 5000);
	CHECK(s.ping_interval_ms == 2000);
	CHECK(s.lag_interval_ms == 2000);
	CHECK(s.read_wait_max_ms == 5000);
	CHECK(s.recheck_ms == 1000);
	CHECK(s.lease_ttl_ms == 5000);
	CHECK(s.lease_timeout_ms == 2000);
	CHECK(s.hold_delay_min_ms == 250);
	CHECK(s.hold_delay_max_ms == 4000);
	CHECK(s.replay_batch == 256);
	CHECK(s.replay_reorder_seqs == 4096);
	CHECK(s.replay_progress_ms == 2000);
	CHECK(s.replay_connect_timeout_ms == 10000);
	CHECK(s.log_level == LOG_LEVEL_INFO);
}

static void
test_gap_wait(void)
{
	struct consumer_settings s;

	/* Unset: twice the ack wait and 5 s, 65 s with the default ack wait. */
	CHECK(load_waits(&s, NULL, NULL) == -1);
	CHECK(s.gap_wait_ms == 65000);
	CHECK(load_waits(&s, "3s", NULL) == -1);
	CHECK(s.gap_wait_ms == 11000);
	CHECK(load_waits(&s, "3s", "0") == -1);
	CHECK(s.gap_wait_ms == 11000);

	/* Set: taken as it is when it is longer than the ack wait. */
	CHECK(load_waits(&s, "1s", "3s") == -1);
	CHECK(s.gap_wait_ms == 3000);
	CHECK(load_waits(&s, NULL, "2m") == -1);
	CHECK(s.gap_wait_ms == 120000);

	/* Not longer than the ack wait: a crashed process's version would come back too late. */
	CHECK(load_waits(&s, NULL, "30s") == 2);
	CHECK(strstr(printed, "CONSUMER_GAP_WAIT (30000ms) must be longer than CONSUMER_ACK_WAIT "
	    "(30000ms)") != NULL);
	CHECK(load_waits(&s, "5s", "2s") == 2);
	CHECK(load_waits(&s, NULL, "soon") == 2);
	CHECK(strstr(printed, "invalid CONSUMER_GAP_WAIT \"soon\"") != NULL);
	unsetenv("CONSUMER_ACK_WAIT");
	unsetenv("CONSUMER_GAP_WAIT");
}

static void
test_pairs_in_order(void)
{
	struct consumer_settings s;

	setenv("CONSUMER_BACKOFF_MIN", "6s", 1);
	CHECK(load(&s) == 2);
	CHECK(strstr(printed, "CONSUMER_BACKOFF_MIN") != NULL);
	setenv("CONSUMER_BACKOFF_MAX", "6s", 1);
	CHECK(load(&s) == -1);
	CHECK(s.backoff_min_ms == 6000 && s.backoff_max_ms == 6000);
	unsetenv("CONSUMER_BACKOFF_MIN");
	unsetenv("CONSUMER_BACKOFF_MAX");

	setenv("CONSUMER_HOLD_DELAY_MIN", "5s", 1);
	CHECK(load(&s) == 2);
	CHECK(strstr(printed, "CONSUMER_HOLD_DELAY_MIN") != NULL);
	unsetenv("CONSUMER_HOLD_DELAY_MIN");

	setenv("CONSUMER_REPLAY_BATCH", "0", 1);
	CHECK(load(&s) == 2);
	CHECK(strstr(printed, "invalid CONSUMER_REPLAY_BATCH \"0\"") != NULL);
	unsetenv("CONSUMER_REPLAY_BATCH");
}

static void
test_options(void)
{
	char *help[] = { "notification-consumer", "--help", NULL };
	char *check[] = { "notification-consumer", "--check", NULL };
	char *unknown[] = { "notification-consumer", "--frobnicate", NULL };
	char *command[] = { "notification-consumer", "replay", "--fresh", NULL };
	struct consumer_settings s;

	/* --help lists every setting with its default, the new ones included. */
	CHECK(load_argv(&s, 2, help) == 0);
	CHECK(strstr(printed, "CONSUMER_REPLAY_REORDER_WINDOW") != NULL);
	CHECK(strstr(printed, "NOTIFICATION_CONSUMER_MAX_CONNECTIONS_PER_IP") != NULL);
	CHECK(strstr(printed, "replay [--from-seq N") != NULL);
	CHECK(load_argv(&s, 2, check) == 0);
	CHECK(strstr(printed, "CONSUMER_GAP_WAIT=65000ms") != NULL);
	CHECK(load_argv(&s, 2, unknown) == 2);
	/* A command is the caller's to read. */
	CHECK(load_argv(&s, 3, command) == -1);
}

/* replay_parse_args() with its own arguments, argv[0] being "replay". */
static int
replay_args(struct replay_options *o, int argc, char **argv)
{
	FILE *tmp = tmpfile();
	int out = dup(1), err = dup(2), rc;
	size_t n;

	fflush(stdout);
	fflush(stderr);
	dup2(fileno(tmp), 1);
	dup2(fileno(tmp), 2);
	rc = replay_parse_args(argc, argv, o);
	fflush(stdout);
	fflush(stderr);
	dup2(out, 1);
	dup2(err, 2);
	close(out);
	close(err);
	rewind(tmp);
	n = fread(printed, 1, sizeof(printed) - 1, tmp);
	printed[n] = '\0';
	fclose(tmp);
	return rc;
}

static void
test_replay_arguments(void)
{
	char *none[] = { "replay", NULL };
	char *fresh[] = { "replay", "--fresh", "--from-seq", "5", NULL };
	char *time[] = { "replay", "--from-time", "2026-01-02T03:04:05Z", NULL };
	char *help[] = { "replay", "--bogus", "-h", NULL };
	char *bad_seq[] = { "replay", "--from-seq", "x", NULL };
	char *both[] = { "replay", "--from-seq", "1", "--from-time", "2026-01-02T03:04:05Z", NULL };
	char *bogus[] = { "replay", "--bogus", NULL };
	struct replay_options o;

	CHECK(replay_args(&o, 1, none) == -1);
	CHECK(!o.fresh && o.start.seq == 0 && o.start.time_ns == 0);
	CHECK(replay_args(&o, 4, fresh) == -1);
	CHECK(o.fresh && o.start.seq == 5);
	CHECK(replay_args(&o, 3, time) == -1);
	CHECK(o.start.time_ns == 1767323045LL * 1000000000LL);
	/* --help anywhere answers, whatever else is there. */
	CHECK(replay_args(&o, 3, help) == 0);
	CHECK(strncmp(printed, "Usage: notification-consumer replay", 35) == 0);
	CHECK(replay_args(&o, 3, bad_seq) == 2);
	CHECK(strstr(printed, "--from-seq \"x\"") != NULL);
	CHECK(replay_args(&o, 5, both) == 2);
	CHECK(replay_args(&o, 2, bogus) == 2);
}

int
main(void)
{
	/* The tests set what they need; nothing from the caller's environment leaks in. */
	static const char *const names[] = { "NATS_URL", "MONGODB_URI", "MONGODB_DB",
		"MONGODB_COLLECTION", "MONGODB_HISTORY_COLLECTION", "MONGODB_TIMEOUT",
		"NOTIFICATION_CONSUMER_BIND", "NOTIFICATION_CONSUMER_PORT", "CONSUMER_HTTP_THREADS",
		"NOTIFICATION_CONSUMER_MAX_BODY", "NOTIFICATION_CONSUMER_CONN_TIMEOUT",
		"NOTIFICATION_CONSUMER_MAX_CONNECTIONS", "NOTIFICATION_CONSUMER_MAX_CONNECTIONS_PER_IP",
		"NOTIFICATION_CONSUMER_DRAIN_TIMEOUT", "CONSUMER_STREAM", "CONSUMER_DURABLE",
		"CONSUMER_DLQ_STREAM", "CONSUMER_DLQ_SUBJECT_PREFIX", "CONSUMER_NATS_TIMEOUT",
		"CONSUMER_BATCH", "CONSUMER_ACK_WAIT", "CONSUMER_MAX_ACK_PENDING", "CONSUMER_FETCH_EXPIRY",
		"CONSUMER_BACKOFF_MIN", "CONSUMER_BACKOFF_MAX", "CONSUMER_PING_INTERVAL",
		"CONSUMER_LAG_INTERVAL", "CONSUMER_READ_WAIT_MAX", "CONSUMER_RECHECK_AFTER",
		"CONSUMER_LEASE_TTL", "CONSUMER_LEASE_TIMEOUT", "CONSUMER_GAP_WAIT",
		"CONSUMER_HOLD_DELAY_MIN", "CONSUMER_HOLD_DELAY_MAX", "CONSUMER_REPLAY_BATCH",
		"CONSUMER_REPLAY_REORDER_WINDOW", "CONSUMER_REPLAY_PROGRESS_INTERVAL",
		"CONSUMER_REPLAY_CONNECT_TIMEOUT", "LOG_LEVEL", "LOG_FORMAT" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unsetenv(names[i]);
	test_defaults();
	test_gap_wait();
	test_pairs_in_order();
	test_options();
	test_replay_arguments();
	return unit_report("consumer_settings");
}
