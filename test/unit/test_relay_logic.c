/* Unit tests of the relay's small pure parts: poll pacing, message sizes, snapshot arguments, settings. */
#include <stdlib.h>
#include <string.h>

#include "../../outbox-relay/batch.h"
#include "../../outbox-relay/relay.h"
#include "../../outbox-relay/settings.h"
#include "../../outbox-relay/snapshot.h"
#include "unit.h"

static void
test_poll(void)
{
	/* A full batch means more is waiting: no sleep at all. */
	CHECK(relay_next_poll(0, 500, 500, 20, 1000) == 0);
	CHECK(relay_next_poll(800, 500, 500, 20, 1000) == 0);
	/* A partial batch: come back soon. */
	CHECK(relay_next_poll(800, 3, 500, 20, 1000) == 20);
	/* Idle: the wait grows to the maximum and stays there. */
	CHECK(relay_next_poll(0, 0, 500, 20, 1000) == 20);
	CHECK(relay_next_poll(20, 0, 500, 20, 1000) == 40);
	CHECK(relay_next_poll(640, 0, 500, 20, 1000) == 1000);
	CHECK(relay_next_poll(1000, 0, 500, 20, 1000) == 1000);
}

static void
test_header_bytes(void)
{
	const char *hdr_tp = "NATS/1.0\r\nNats-Msg-Id: 01234567-89ab-cdef-0123-456789abcdef\r\n"
	    "Content-Type: application/json\r\n"
	    "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
	const char *hdr = "NATS/1.0\r\nNats-Msg-Id: 01234567-89ab-cdef-0123-456789abcdef\r\n"
	    "Content-Type: application/json\r\n\r\n";

	CHECK(outbox_message_header_bytes(55) == strlen(hdr_tp));
	CHECK(outbox_message_header_bytes(0) == strlen(hdr));
}

static void
test_snapshot_args(void)
{
	struct snapshot_options o;
	char err[256];
	char *none[] = { NULL };
	char *ok[] = { "--after", "42", "--batch", "7" };
	char *bad_after[] = { "--after", "x" };
	char *bad_batch[] = { "--batch", "0" };
	char *unknown[] = { "--since", "3" };
	char *help[] = { "--batch", "5", "--help" };

	CHECK(snapshot_parse_args(0, none, &o, err, sizeof(err)) == 0);
	CHECK(o.after == 0 && o.batch == 1000 && !o.help);
	CHECK(snapshot_parse_args(3, help, &o, err, sizeof(err)) == 0);
	CHECK(o.help);
	CHECK(snapshot_parse_args(4, ok, &o, err, sizeof(err)) == 0);
	CHECK(o.after == 42 && o.batch == 7);
	CHECK(snapshot_parse_args(2, bad_after, &o, err, sizeof(err)) == -1);
	CHECK_STR(err, "invalid --after \"x\": expected a user id");
	CHECK(snapshot_parse_args(2, bad_batch, &o, err, sizeof(err)) == -1);
	CHECK(snapshot_parse_args(2, unknown, &o, err, sizeof(err)) == -1);
	CHECK(strstr(err, "\"--since\"") != NULL);
}

static int
load(struct relay_settings *s, int argc, char **argv, int *argi)
{
	memset(s, 0, sizeof(*s));
	return relay_settings_load(argc, argv, s, argi);
}

static void
test_settings(void)
{
	char *argv[] = { "outbox-relay", NULL };
	char *snapshot[] = { "outbox-relay", "snapshot", "--batch", "5", NULL };
	char *unknown[] = { "outbox-relay", "--frobnicate", NULL };
	/* The tests set what they need; nothing from the caller's environment leaks in. */
	static const char *const names[] = { "NATS_URL", "OUTBOX_RELAY_BIND", "OUTBOX_RELAY_PORT",
		"OUTBOX_RELAY_THREADS", "OUTBOX_RELAY_MAX_BODY", "OUTBOX_RELAY_CONN_TIMEOUT",
		"OUTBOX_RELAY_MAX_CONNECTIONS", "OUTBOX_RELAY_MAX_CONNECTIONS_PER_IP",
		"OUTBOX_RELAY_DRAIN_TIMEOUT", "RELAY_BATCH_SIZE", "RELAY_PIPELINE",
		"RELAY_DUPLICATE_WINDOW", "RELAY_STREAM_REPLICAS", "RELAY_STREAM_MAX_AGE",
		"RELAY_STREAM_MAX_BYTES", "RELAY_POLL_MIN", "RELAY_POLL_MAX", "RELAY_RETAIN",
		"RELAY_SWEEP_BATCH", "RELAY_STREAM_CHECK_INTERVAL", "LOG_LEVEL", "LOG_FORMAT" };
	struct relay_settings s;
	int argi;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unsetenv(names[i]);
	CHECK(load(&s, 1, argv, &argi) == -1 && argi == 1);
	CHECK(s.http.port == 8082);
	CHECK_STR(s.http.bind, "127.0.0.1");
	CHECK(s.http.threads == 2 && s.http.max_body == 1024 && s.http.conn_timeout_s == 10);
	CHECK(s.http.max_connections == 64 && s.http.max_connections_per_ip == 8);
	CHECK(s.http.request_timeout_ms == 10000 && s.http.rate_limit == 1000);
	CHECK(s.drain_ms == 1000);
	CHECK(s.batch_size == 1000);
	CHECK(s.pipeline == 2);
	CHECK(s.duplicate_window_ms == 120000);
	CHECK(s.stream_replicas == 1);
	CHECK(s.stream_max_age_ms == 0 && s.stream_max_bytes == 0);
	CHECK(s.retain_ms == 300000 && s.sweep_batch == 1000 && s.stream_check_ms == 5000);
	CHECK_STR(s.nats.url, "nats://localhost:4222");
	CHECK(s.log_level == LOG_LEVEL_INFO);

	/* A command and its arguments are left to main(), from argi on. */
	CHECK(load(&s, 4, snapshot, &argi) == -1 && argi == 1);
	CHECK(load(&s, 2, unknown, &argi) == 2);

	setenv("RELAY_DUPLICATE_WINDOW", "3m", 1);
	setenv("OUTBOX_RELAY_THREADS", "4", 1);
	CHECK(load(&s, 1, argv, &argi) == -1);
	CHECK(s.duplicate_window_ms == 180000);
	CHECK(s.http.threads == 4);
	unsetenv("OUTBOX_RELAY_THREADS");

	/* Published rows are kept longer than the duplicate window and a check interval (and a
	 * second), or the settings are refused. */
	setenv("RELAY_DUPLICATE_WINDOW", "5m", 1);
	CHECK(load(&s, 1, argv, &argi) == 2);
	setenv("RELAY_RETAIN", "5m1s", 1);
	CHECK(load(&s, 1, argv, &argi) == 2);	/* not a duration */
	setenv("RELAY_RETAIN", "306s", 1);
	CHECK(load(&s, 1, argv, &argi) == 2);	/* 5m + 5s + 1s is not enough */
	setenv("RELAY_RETAIN", "307s", 1);
	CHECK(load(&s, 1, argv, &argi) == -1);
	CHECK(s.retain_ms == 307000);
	setenv("RELAY_DUPLICATE_WINDOW", "1s", 1);
	setenv("RELAY_STREAM_CHECK_INTERVAL", "300ms", 1);
	setenv("RELAY_RETAIN", "2300ms", 1);
	CHECK(load(&s, 1, argv, &argi) == 2);
	setenv("RELAY_RETAIN", "3s", 1);
	setenv("RELAY_SWEEP_BATCH", "50", 1);
	CHECK(load(&s, 1, argv, &argi) == -1);
	CHECK(s.retain_ms == 3000 && s.sweep_batch == 50 && s.stream_check_ms == 300);
	setenv("RELAY_SWEEP_BATCH", "0", 1);
	CHECK(load(&s, 1, argv, &argi) == 2);
	unsetenv("RELAY_SWEEP_BATCH");
	unsetenv("RELAY_STREAM_CHECK_INTERVAL");
	unsetenv("RELAY_RETAIN");
	setenv("RELAY_DUPLICATE_WINDOW", "3m", 1);

	setenv("RELAY_BATCH_SIZE", "0", 1);
	CHECK(load(&s, 1, argv, &argi) == 2);
	unsetenv("RELAY_BATCH_SIZE");
	setenv("OUTBOX_RELAY_DRAIN_TIMEOUT", "10s", 1);
	CHECK(load(&s, 1, argv, &argi) == 2);
	unsetenv("OUTBOX_RELAY_DRAIN_TIMEOUT");

	/* 1 is the relay without a pipeline; more than RELAY_PIPELINE_MAX is refused. */
	setenv("RELAY_PIPELINE", "1", 1);
	CHECK(load(&s, 1, argv, &argi) == -1);
	CHECK(s.pipeline == 1);
	setenv("RELAY_PIPELINE", "0", 1);
	CHECK(load(&s, 1, argv, &argi) == 2);
	setenv("RELAY_PIPELINE", "5", 1);
	CHECK(load(&s, 1, argv, &argi) == 2);
	unsetenv("RELAY_PIPELINE");

	/* Checked against each other, not only one by one. */
	setenv("RELAY_POLL_MIN", "2s", 1);
	setenv("RELAY_POLL_MAX", "1s", 1);
	CHECK(load(&s, 1, argv, &argi) == 2);
	setenv("RELAY_POLL_MAX", "2s", 1);
	CHECK(load(&s, 1, argv, &argi) == -1);
	CHECK(s.poll_min_ms == 2000 && s.poll_max_ms == 2000);
	unsetenv("RELAY_POLL_MIN");
	unsetenv("RELAY_POLL_MAX");
	unsetenv("RELAY_DUPLICATE_WINDOW");
}

int
main(void)
{
	test_poll();
	test_header_bytes();
	test_snapshot_args();
	test_settings();
	return unit_report("relay_logic");
}
