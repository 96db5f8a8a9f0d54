/* Unit tests of the stream plan: which differences the relay changes in place and which it reports. */
#include <string.h>

#include "../../outbox-relay/stream.h"
#include "unit.h"

static struct relay_settings
defaults(void)
{
	struct relay_settings s;

	memset(&s, 0, sizeof(s));
	s.duplicate_window_ms = 120000;
	s.stream_replicas = 1;
	return s;
}

static void
test_wanted(void)
{
	struct relay_settings s = defaults();
	jsStreamConfig c;

	stream_config_wanted(&s, &c);
	CHECK_STR(c.Name, "USER_EVENTS");
	CHECK(c.SubjectsLen == 1);
	CHECK_STR(c.Subjects[0], "user.events.>");
	CHECK(c.Storage == js_FileStorage);
	CHECK(c.Retention == js_LimitsPolicy);
	CHECK(c.Duplicates == 120000LL * 1000000LL);
	CHECK(c.MaxAge == 0);
	CHECK(c.MaxBytes == -1);
	CHECK(c.MaxMsgs == -1);
	CHECK(c.Discard == js_DiscardOld);	/* nothing is ever discarded without limits */

	s.stream_max_bytes = 1 << 20;
	stream_config_wanted(&s, &c);
	CHECK(c.MaxBytes == 1 << 20);
	CHECK(c.Discard == js_DiscardNew);	/* a full stream refuses rather than drops */

	s = defaults();
	s.stream_max_age_ms = 3600000;
	stream_config_wanted(&s, &c);
	CHECK(c.MaxAge == 3600000LL * 1000000LL);
	CHECK(c.Discard == js_DiscardNew);
}

static void
test_same_is_no_change(void)
{
	struct relay_settings s = defaults();
	jsStreamConfig want, have, merged;
	struct stream_plan p;

	stream_config_wanted(&s, &want);
	have = want;
	stream_plan(&have, &want, &merged, &p);
	CHECK(!p.update);
	CHECK(!p.unsafe);
	CHECK_STR(p.changes, "");
	CHECK_STR(p.problems, "");

	/* The server reports "no limit" as -1 or 0 depending on the field: both mean the same. */
	have.MaxBytes = 0;
	have.MaxAge = -1;
	stream_plan(&have, &want, &merged, &p);
	CHECK(!p.update);
}

static void
test_safe_changes(void)
{
	struct relay_settings s = defaults();
	jsStreamConfig want, have, merged;
	struct stream_plan p;

	stream_config_wanted(&s, &want);
	have = want;
	have.Duplicates = 60000LL * 1000000LL;
	have.MaxMsgs = 1000;
	have.Description = "kept";
	stream_plan(&have, &want, &merged, &p);
	CHECK(p.update);
	CHECK(!p.unsafe);
	CHECK(merged.Duplicates == want.Duplicates);
	CHECK(merged.MaxMsgs == -1);
	CHECK_STR(merged.Description, "kept");
	CHECK(strstr(p.changes, "duplicate window 60000ms -> 120000ms") != NULL);
	CHECK(strstr(p.changes, "message count limits removed") != NULL);

	s.stream_max_bytes = 4096;
	stream_config_wanted(&s, &want);
	have.Duplicates = want.Duplicates;
	have.MaxMsgs = -1;
	stream_plan(&have, &want, &merged, &p);
	CHECK(p.update);
	CHECK(merged.MaxBytes == 4096);
	CHECK(merged.Discard == js_DiscardNew);
	CHECK(strstr(p.changes, "discard old -> new") != NULL);
}

static void
test_unsafe_reported(void)
{
	struct relay_settings s = defaults();
	jsStreamConfig want, have, merged;
	struct stream_plan p;
	const char *other[] = { "orders.>" };

	stream_config_wanted(&s, &want);
	have = want;
	have.Storage = js_MemoryStorage;
	stream_plan(&have, &want, &merged, &p);
	CHECK(!p.update);
	CHECK(p.unsafe);
	CHECK(strstr(p.problems, "storage is memory, wanted file") != NULL);
	CHECK(merged.Storage == js_MemoryStorage);	/* never sent as a change */

	have = want;
	have.Retention = js_WorkQueuePolicy;
	stream_plan(&have, &want, &merged, &p);
	CHECK(p.unsafe);
	CHECK(merged.Retention == js_WorkQueuePolicy);

	have = want;
	have.Subjects = other;
	stream_plan(&have, &want, &merged, &p);
	CHECK(p.unsafe);
	CHECK(strstr(p.problems, "user.events.>") != NULL);
}

int
main(void)
{
	test_wanted();
	test_same_is_no_change();
	test_safe_changes();
	test_unsafe_reported();
	return unit_report("relay_stream");
}
