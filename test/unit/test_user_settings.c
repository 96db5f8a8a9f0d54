/* Unit tests of user-api's settings: defaults, ranges, and the arguments it refuses. */
#include <stdlib.h>
#include <string.h>

#include "settings.h"
#include "unit.h"

static int
load(struct user_api_settings *s, int argc, char **argv)
{
	memset(s, 0, sizeof(*s));
	return user_api_settings_load(argc, argv, s);
}

static void
test_defaults(void)
{
	char *argv[] = { "user-api", NULL };
	struct user_api_settings s;

	CHECK(load(&s, 1, argv) == -1);
	CHECK_STR(s.store.pg.host, "localhost");
	CHECK(s.store.pg.port == 5432);
	CHECK(s.http.port == 8080);
	CHECK(s.store.connections == 4);
	CHECK(s.http.max_body == 65536);
	CHECK(s.store.idempotency_ttl_ms == 24L * 3600 * 1000);
	CHECK(s.store.reconnect_holdoff_ms == 250);
	CHECK(s.store.key_sweep_batch == 1000);
	CHECK(s.key_sweep_interval_ms == 60 * 1000);
	CHECK(s.drain_ms == 5000);
	CHECK(s.log_level == LOG_LEVEL_INFO);
}

static void
test_values_and_ranges(void)
{
	char *argv[] = { "user-api", NULL };
	struct user_api_settings s;

	setenv("USER_API_KEY_SWEEP_INTERVAL", "5s", 1);
	setenv("USER_API_RECONNECT_HOLDOFF", "0", 1);
	setenv("LOG_LEVEL", "debug", 1);
	CHECK(load(&s, 1, argv) == -1);
	CHECK(s.key_sweep_interval_ms == 5000);
	CHECK(s.store.reconnect_holdoff_ms == 0);
	CHECK(s.log_level == LOG_LEVEL_DEBUG);

	setenv("USER_API_KEY_SWEEP_BATCH", "0", 1);
	CHECK(load(&s, 1, argv) == 2);
	setenv("USER_API_KEY_SWEEP_BATCH", "500", 1);
	CHECK(load(&s, 1, argv) == -1);
	CHECK(s.store.key_sweep_batch == 500);

	setenv("USER_API_KEY_SWEEP_INTERVAL", "10ms", 1);
	CHECK(load(&s, 1, argv) == 2);
	unsetenv("USER_API_KEY_SWEEP_INTERVAL");
	unsetenv("USER_API_RECONNECT_HOLDOFF");
	unsetenv("USER_API_KEY_SWEEP_BATCH");
	unsetenv("LOG_LEVEL");
}

static void
test_arguments(void)
{
	char *extra[] = { "user-api", "serve", NULL };
	char *unknown[] = { "user-api", "--frobnicate", NULL };
	struct user_api_settings s;

	CHECK(load(&s, 2, extra) == 2);
	CHECK(load(&s, 2, unknown) == 2);
}

int
main(void)
{
	/* The tests set what they need; nothing from the caller's environment leaks in. */
	static const char *const names[] = { "POSTGRES_HOST", "POSTGRES_PORT", "USER_API_PORT",
		"USER_API_PG_CONNECTIONS", "USER_API_MAX_BODY", "USER_API_IDEMPOTENCY_TTL",
		"USER_API_RECONNECT_HOLDOFF", "USER_API_KEY_SWEEP_BATCH", "USER_API_KEY_SWEEP_INTERVAL",
		"USER_API_DRAIN_TIMEOUT", "LOG_LEVEL", "LOG_FORMAT" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unsetenv(names[i]);
	test_defaults();
	test_values_and_ranges();
	test_arguments();
	return unit_report("user_settings");
}
