/* Unit tests of the consumer's pure logic: event validation, RFC 3339 times, ack metadata. */
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "jetstream.h"
#include "unit.h"

#define ID "0b6a4272-6908-4195-bc87-f1e26ea24eb1"
#define T "2026-11-29T10:00:00.123456Z"

static int
parse(const char *body, const char *subject, struct event *ev, char *err)
{
	return event_parse(body, strlen(body), subject, ev, err, 256);
}

static char *
body_with(const char *type, const char *payload_extra, const char *envelope_extra)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf), "{\"type\":\"%s\",\"event_id\":\"" ID "\",\"schema_version\":1,"
	    "\"occurred_at\":\"" T "\",\"payload\":{\"id\":7,\"name\":\"Ann\",\"email\":\"a@x.io\","
	    "\"version\":3,\"updated_at\":\"" T "\"%s}%s}", type, payload_extra, envelope_extra);
	return buf;
}

/* A body of schema version 2 ("deleted" always present, a deletion with name and email). */
static char *
body_v2(const char *type, const char *deleted)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf), "{\"type\":\"%s\",\"event_id\":\"" ID "\",\"schema_version\":2,"
	    "\"occurred_at\":\"" T "\",\"payload\":{\"id\":7,\"name\":\"Ann\",\"email\":\"a@x.io\","
	    "\"version\":3,\"updated_at\":\"" T "\"%s}}", type, deleted);
	return buf;
}

/* A body as the relay writes it today (schema version 3): personal is the payload's name and
 * email, which a deletion leaves out. */
static char *
body_v3(const char *type, const char *personal, const char *deleted)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf), "{\"type\":\"%s\",\"event_id\":\"" ID "\",\"schema_version\":3,"
	    "\"occurred_at\":\"" T "\",\"payload\":{\"id\":7%s,\"version\":3,\"updated_at\":\"" T
	    "\",\"deleted\":%s}}", type, personal, deleted);
	return buf;
}

/* The current schema version and the ones before it are read; version 1 is upcast. A deletion
 * of any version comes out without name and email. */
static void
test_schema_versions(void)
{
	struct event ev;
	char err[256];

	CHECK(parse(body_v3("user_updated", ",\"name\":\"Ann\",\"email\":\"a@x.io\"", "false"),
	    "user.events.updated", &ev, err) == 0);
	CHECK(ev.schema_version == EVENT_SCHEMA_VERSION && !ev.deleted && ev.version == 3);
	CHECK_STR(ev.name, "Ann");
	event_release(&ev);
	CHECK(parse(body_v3("user_deleted", "", "true"), "user.events.deleted", &ev, err) == 0);
	CHECK(ev.kind == EVENT_DELETED && ev.deleted && ev.name == NULL && ev.email == NULL);
	event_release(&ev);
	/* Version 3 still needs them on every other kind. */
	CHECK(parse(body_v3("user_updated", "", "false"), "user.events.updated", &ev, err) == -1);
	CHECK(strstr(err, "name") != NULL);
	/* Older deletions (and a producer that still sends them) carry them: read past, not kept. */
	CHECK(parse(body_v3("user_deleted", ",\"name\":\"Ann\",\"email\":\"a@x.io\"", "true"),
	    "user.events.deleted", &ev, err) == 0);
	CHECK(ev.name == NULL && ev.email == NULL);
	event_release(&ev);
	CHECK(parse(body_v2("user_updated", ",\"deleted\":false"), "user.events.updated", &ev, err) == 0);
	CHECK(ev.schema_version == 2 && !ev.deleted && ev.version == 3);
	event_release(&ev);
	CHECK(parse(body_v2("user_deleted", ",\"deleted\":true"), "user.events.deleted", &ev, err) == 0);
	CHECK(ev.kind == EVENT_DELETED && ev.deleted && ev.name == NULL && ev.email == NULL);
	event_release(&ev);
	/* Version 2 must say "deleted"; version 1 said it on deletions only. */
	CHECK(parse(body_v2("user_updated", ""), "user.events.updated", &ev, err) == -1);
	CHECK(strstr(err, "deleted") != NULL);
	CHECK(parse(body_with("user_updated", "", ""), "user.events.updated", &ev, err) == 0);
	CHECK(ev.schema_version == 1 && !ev.deleted && ev.user_id == 7);
	event_release(&ev);
	CHECK(parse(body_with("user_deleted", ",\"deleted\":true", ""), "user.events.deleted", &ev,
	    err) == 0);
	CHECK(ev.schema_version == 1 && ev.deleted && ev.name == NULL && ev.email == NULL);
	event_release(&ev);
	/* Outside the range this consumer reads: poison, with the range in the reason. At least the
	 * version before the current one is read. */
	CHECK(EVENT_SCHEMA_VERSION_OLDEST <= EVENT_SCHEMA_VERSION - 1);
	CHECK(parse("{\"type\":\"user_updated\",\"event_id\":\"" ID "\",\"schema_version\":0,"
	    "\"occurred_at\":\"" T "\",\"payload\":{}}", "user.events.updated", &ev, err) == -1);
	CHECK(strstr(err, "reads 1 to 3") != NULL);
	/* Every kind's type and subject come from the one table. */
	CHECK(event_kind_by_type(EVENT_TYPE_SNAPSHOT)->kind == EVENT_SNAPSHOT);
	CHECK_STR(event_kind_info(EVENT_DELETED)->subject, EVENT_SUBJECT_DELETED);
	CHECK(event_kind_by_type("user_renamed") == NULL);
}

static void
test_valid(void)
{
	struct event ev;
	char err[256];

	CHECK(parse(body_with("user_updated", "", ""), "user.events.updated", &ev, err) == 0);
	CHECK(ev.kind == EVENT_UPDATED);
	CHECK(ev.user_id == 7 && ev.version == 3 && !ev.deleted);
	CHECK_STR(ev.name, "Ann");
	CHECK_STR(ev.email, "a@x.io");
	CHECK_STR(ev.event_id, ID);
	CHECK_STR(ev.updated_at, T);
	CHECK(ev.occurred_us == 1795946400123456LL);
	event_release(&ev);

	CHECK(parse(body_with("user_deleted", ",\"deleted\":true", ""), "user.events.deleted", &ev,
	    err) == 0);
	CHECK(ev.kind == EVENT_DELETED && ev.deleted);
	event_release(&ev);

	CHECK(parse(body_with("user_snapshot", "", ""), "user.events.snapshot", &ev, err) == 0);
	CHECK(ev.kind == EVENT_SNAPSHOT);
	event_release(&ev);

	/* Unknown envelope keys are tolerated: schema_version says what must be understood. */
	CHECK(parse(body_with("user_created", "", ",\"extra\":1"), "user.events.created", &ev, err) == 0);
	event_release(&ev);
}

static void
test_poison(void)
{
	struct event ev;
	char err[256];

	CHECK(parse("not json", "user.events.updated", &ev, err) == -1);
	CHECK(strstr(err, "not JSON") != NULL);
	CHECK(parse("[1]", "user.events.updated", &ev, err) == -1);
	CHECK(parse(body_with("user_renamed", "", ""), "user.events.updated", &ev, err) == -1);
	CHECK(strstr(err, "unknown event type") != NULL);
	CHECK(parse(body_with("user_updated", "", ""), "user.events.created", &ev, err) == -1);
	CHECK(strstr(err, "subject") != NULL);
	CHECK(parse(body_with("user_deleted", "", ""), "user.events.deleted", &ev, err) == -1);
	CHECK(parse(body_with("user_updated", ",\"deleted\":true", ""), "user.events.updated", &ev,
	    err) == -1);
	CHECK(parse(body_with("user_updated", ",\"deleted\":\"yes\"", ""), "user.events.updated", &ev,
	    err) == -1);
	CHECK(parse("{\"type\":\"user_updated\",\"event_id\":\"" ID "\",\"schema_version\":4,"
	    "\"occurred_at\":\"" T "\",\"payload\":{}}", "user.events.updated", &ev, err) == -1);
	CHECK(strstr(err, "schema_version") != NULL);
	CHECK(parse("{\"type\":\"user_updated\",\"event_id\":\"nope\",\"schema_version\":1,"
	    "\"occurred_at\":\"" T "\",\"payload\":{}}", "user.events.updated", &ev, err) == -1);
	CHECK(strstr(err, "uuid") != NULL);
	CHECK(parse("{\"type\":\"user_updated\",\"event_id\":\"" ID "\",\"schema_version\":1,"
	    "\"occurred_at\":\"yesterday\",\"payload\":{}}", "user.events.updated", &ev, err) == -1);
	CHECK(parse("{\"type\":\"user_updated\",\"event_id\":\"" ID "\",\"schema_version\":1,"
	    "\"occurred_at\":\"" T "\"}", "user.events.updated", &ev, err) == -1);
	CHECK(strstr(err, "payload") != NULL);
	CHECK(parse("{\"type\":\"user_updated\",\"type\":\"user_updated\"}", "user.events.updated", &ev,
	    err) == -1);
	CHECK(strstr(err, "not JSON") != NULL);	/* refused for the duplicate, not a missing field */
	/* Payload fields: missing, wrong type, non-positive, NUL and control characters. */
	CHECK(parse("{\"type\":\"user_updated\",\"event_id\":\"" ID "\",\"schema_version\":1,"
	    "\"occurred_at\":\"" T "\",\"payload\":{\"id\":\"7\",\"name\":\"a\",\"email\":\"b\","
	    "\"version\":1,\"updated_at\":\"" T "\"}}", "user.events.updated", &ev, err) == -1);
	CHECK(parse("{\"type\":\"user_updated\",\"event_id\":\"" ID "\",\"schema_version\":1,"
	    "\"occurred_at\":\"" T "\",\"payload\":{\"id\":7,\"name\":\"a\",\"email\":\"b\","
	    "\"version\":0,\"updated_at\":\"" T "\"}}", "user.events.updated", &ev, err) == -1);
	CHECK(parse("{\"type\":\"user_updated\",\"event_id\":\"" ID "\",\"schema_version\":1,"
	    "\"occurred_at\":\"" T "\",\"payload\":{\"id\":7,\"name\":\"a\\u0000b\",\"email\":\"b\","
	    "\"version\":1,\"updated_at\":\"" T "\"}}", "user.events.updated", &ev, err) == -1);
	CHECK(parse("{\"type\":\"user_updated\",\"event_id\":\"" ID "\",\"schema_version\":1,"
	    "\"occurred_at\":\"" T "\",\"payload\":{\"id\":7,\"name\":\"a\\nb\",\"email\":\"b\","
	    "\"version\":1,\"updated_at\":\"" T "\"}}", "user.events.updated", &ev, err) == -1);
	CHECK(parse("{\"type\":\"user_updated\",\"event_id\":\"" ID "\",\"schema_version\":1,"
	    "\"occurred_at\":\"" T "\",\"payload\":{\"id\":7,\"email\":\"b\","
	    "\"version\":1,\"updated_at\":\"" T "\"}}", "user.events.updated", &ev, err) == -1);
	CHECK(strstr(err, "name") != NULL);
}

/* A name or email in an event: one definition of a control character with user-api (C0, DEL and
 * C1, which user-api always refused: poison); bidirectional formatting and invisible characters,
 * which user-api accepted before it refused them, are read (docs/events.md). */
static void
test_characters(void)
{
	static const char *const poison[] = { "a\\u0085b", "a\\u009Bb", "a\\u007Fb", "a\\u001Bb",
		"a\xC2\x80" "b" };
	static const char *const read[] = { "evil\\u202Egpj", "a\\u2066b", "ad\\u200Bmin", "\\uFEFFa",
		"a\\u2028b", "a\\u200Eb" };
	struct event ev;
	char err[256], payload[128];

	for (size_t i = 0; i < sizeof(poison) / sizeof(poison[0]); i++) {
		snprintf(payload, sizeof(payload), ",\"name\":\"%s\",\"email\":\"a@x.io\"", poison[i]);
		CHECK(parse(body_v3("user_updated", payload, "false"), "user.events.updated", &ev,
		    err) == -1);
		CHECK(strstr(err, "control character") != NULL);
		snprintf(payload, sizeof(payload), ",\"name\":\"Ann\",\"email\":\"a%s@x.io\"", poison[i]);
		CHECK(parse(body_v3("user_updated", payload, "false"), "user.events.updated", &ev,
		    err) == -1);
	}
	for (size_t i = 0; i < sizeof(read) / sizeof(read[0]); i++) {
		snprintf(payload, sizeof(payload), ",\"name\":\"%s\",\"email\":\"a@x.io\"", read[i]);
		CHECK(parse(body_v3("user_updated", payload, "false"), "user.events.updated", &ev,
		    err) == 0);
		event_release(&ev);
	}
}

static void
test_times(void)
{
	int64_t us = 0;

	CHECK(rfc3339_parse("1970-01-01T00:00:00Z", &us) && us == 0);
	CHECK(rfc3339_parse("1970-01-01T00:00:01.5Z", &us) && us == 1500000);
	CHECK(rfc3339_parse("1970-01-01T01:00:00+01:00", &us) && us == 0);
	CHECK(rfc3339_parse("2026-11-29T10:00:00.1234567Z", &us) && us % 1000000 == 123456);
	CHECK(!rfc3339_parse("2026-11-29 10:00:00Z", &us));
	CHECK(!rfc3339_parse("2026-13-29T10:00:00Z", &us));
	/* Impossible dates are refused, not moved to the next month (fuzz_consumer_event found them). */
	CHECK(!rfc3339_parse("2026-02-29T00:00:00Z", &us));
	CHECK(!rfc3339_parse("2026-02-31T00:00:00Z", &us));
	CHECK(!rfc3339_parse("2026-04-31T00:00:00Z", &us));
	CHECK(!rfc3339_parse("1900-02-29T00:00:00Z", &us));
	CHECK(rfc3339_parse("2024-02-29T00:00:00Z", &us) && us == 1709164800000000LL);
	CHECK(rfc3339_parse("2000-02-29T00:00:00Z", &us));
	CHECK(rfc3339_parse("2026-12-31T23:59:59Z", &us));
	CHECK(!rfc3339_parse("2026-11-29T10:00:00", &us));
	CHECK(!rfc3339_parse("2026-11-29T10:00:00Zjunk", &us));
	CHECK(!rfc3339_parse("2026-11-29T10:00:00.Z", &us));
}

static void
test_meta(void)
{
	struct js_meta m;

	CHECK(js_meta_parse("$JS.ACK.USER_EVENTS.notification-consumer.2.15.14.1795860000123456789.3",
	    &m));
	CHECK(m.delivered == 2 && m.stream_seq == 15 && m.consumer_seq == 14 && m.pending == 3);
	CHECK(m.timestamp_ns == 1795860000123456789LL);
	CHECK(js_meta_parse("$JS.ACK.hub.ACCHASH.USER_EVENTS.c.1.5.5.1795860000000000000.0.xyz", &m));
	CHECK(m.delivered == 1 && m.stream_seq == 5 && m.pending == 0);
	CHECK(!js_meta_parse("_INBOX.abc", &m));
	CHECK(!js_meta_parse("$JS.ACK.S.C.1.2.3", &m));
	CHECK(!js_meta_parse("$JS.ACK.S.C.x.2.3.4.5", &m));
	CHECK(!js_meta_parse(NULL, &m));
}

int
main(void)
{
	test_valid();
	test_schema_versions();
	test_poison();
	test_characters();
	test_times();
	test_meta();
	return unit_report("consumer_event");
}
