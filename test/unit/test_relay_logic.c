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

static void
test_settings(void)
{
	struct relay_settings s;
	const struct config_entry *tab = relay_settings_table(&s);
	char err[256];

	unsetenv("RELAY_BATCH_SIZE");
	unsetenv("RELAY_PIPELINE");
	unsetenv("RELAY_DUPLICATE_WINDOW");
	unsetenv("RELAY_POLL_MIN");
	unsetenv("RELAY_POLL_MAX");
	unsetenv("OUTBOX_RELAY_PORT");
	CHECK(config_load(tab, err, sizeof(err)) == 0);
	CHECK(s.port == 8082);
	CHECK(s.batch_size == 1000);
	CHECK(s.pipeline == 2);
	CHECK(s.duplicate_window_ms == 120000);
	CHECK(s.stream_replicas == 1);
	CHECK(s.stream_max_age_ms == 0 && s.stream_max_bytes == 0);
	CHECK_STR(s.nats_url, "nats://localhost:4222");
	CHECK(relay_settings_check(&s, err, sizeof(err)) == 0);

	setenv("RELAY_DUPLICATE_WINDOW", "5m", 1);
	CHECK(config_load(tab, err, sizeof(err)) == 0);
	CHECK(s.duplicate_window_ms == 300000);

	setenv("RELAY_BATCH_SIZE", "0", 1);
	CHECK(config_load(tab, err, sizeof(err)) == -1);
	CHECK(strstr(err, "RELAY_BATCH_SIZE") != NULL);
	unsetenv("RELAY_BATCH_SIZE");

	/* 1 is the relay without a pipeline; more than RELAY_PIPELINE_MAX is refused. */
	setenv("RELAY_PIPELINE", "1", 1);
	CHECK(config_load(tab, err, sizeof(err)) == 0);
	CHECK(s.pipeline == 1);
	setenv("RELAY_PIPELINE", "0", 1);
	CHECK(config_load(tab, err, sizeof(err)) == -1);
	setenv("RELAY_PIPELINE", "5", 1);
	CHECK(config_load(tab, err, sizeof(err)) == -1);
	CHECK(strstr(err, "RELAY_PIPELINE") != NULL);
	unsetenv("RELAY_PIPELINE");

	setenv("RELAY_POLL_MIN", "2s", 1);
	setenv("RELAY_POLL_MAX", "1s", 1);
	CHECK(config_load(tab, err, sizeof(err)) == 0);
	CHECK(relay_settings_check(&s, err, sizeof(err)) == -1);
	CHECK(strstr(err, "RELAY_POLL_MIN") != NULL);
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
