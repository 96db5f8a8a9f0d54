/* Unit tests of the shared code: settings parsing, connection strings shown without their password,
 * ids, traceparent, backoff, failpoints. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "failpoint.h"
#include "http_page.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "percent.h"
#include "pg.h"
#include "unit.h"
#include "util.h"

static void
test_parsers(void)
{
	long v = 0;
	bool b = false;

	CHECK(config_parse_long("8080", 1, 65535, &v) == 0 && v == 8080);
	CHECK(config_parse_long("0", 1, 65535, &v) == -1);
	CHECK(config_parse_long("70000", 1, 65535, &v) == -1);
	CHECK(config_parse_long("80a", 1, 65535, &v) == -1);
	CHECK(config_parse_long("", 1, 65535, &v) == -1);
	CHECK(config_parse_ms("250ms", 0, 100000, &v) == 0 && v == 250);
	CHECK(config_parse_ms("2s", 0, 100000, &v) == 0 && v == 2000);
	CHECK(config_parse_ms("2m", 0, 1000000, &v) == 0 && v == 120000);
	CHECK(config_parse_ms("1h", 0, 10000000, &v) == 0 && v == 3600000);
	CHECK(config_parse_ms("15", 0, 100, &v) == 0 && v == 15);
	CHECK(config_parse_ms("-1s", 0, 100000, &v) == -1);
	/* A space before the sign hid it, and the product overflowed (fuzz_http_input found it). */
	CHECK(config_parse_ms(" -1s", 0, 100000, &v) == -1);
	CHECK(config_parse_ms(" -1922330322233032m", 0, 30000, &v) == -1);
	CHECK(config_parse_ms("2d", 0, 100000000, &v) == -1);
	CHECK(config_parse_ms("3m", 0, 60000, &v) == -1);
	CHECK(config_parse_bool("yes", &b) == 0 && b);
	CHECK(config_parse_bool("OFF", &b) == 0 && !b);
	CHECK(config_parse_bool("maybe", &b) == -1);
}

/* PostgreSQL's settings: the process's role and no password by default, sslmode checked. */
static void
test_pg_settings(void)
{
	static const char *const modes[] = { "disable", "allow", "prefer", "require", "verify-ca",
		"verify-full" };
	struct pg_settings pg;
	char err[256] = "";
	const struct config_entry tab[] = {
		PG_SETTINGS_ENTRIES(pg, "unit_role"),
		{ NULL, 0, NULL, NULL, 0, 0, NULL },
	};

	for (const struct config_entry *e = tab; e->name != NULL; e++)
		unsetenv(e->name);
	CHECK(config_load(tab, err, sizeof(err)) == 0);
	CHECK_STR(pg.user, "unit_role");
	CHECK_STR(pg.password, "");
	CHECK_STR(pg.sslmode, "prefer");
	CHECK_STR(pg.sslrootcert, "");
	CHECK(pg_settings_check(&pg, err, sizeof(err)) == 0);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		pg.sslmode = modes[i];
		CHECK(pg_settings_check(&pg, err, sizeof(err)) == 0);
	}
	setenv("POSTGRES_SSLMODE", "verify_full", 1);
	CHECK(config_load(tab, err, sizeof(err)) == 0);
	CHECK(pg_settings_check(&pg, err, sizeof(err)) == -1);
	CHECK_STR(err, "invalid POSTGRES_SSLMODE \"verify_full\": expected disable, allow, prefer, "
	    "require, verify-ca or verify-full");
	unsetenv("POSTGRES_SSLMODE");
}

static void
test_load(void)
{
	long port = 0, wait = 0;
	const char *host = NULL;
	char err[256] = "";
	const struct config_entry tab[] = {
		{ "UT_HOST", CONFIG_STRING, &host, "localhost", 0, 0, "host" },
		{ "UT_PORT", CONFIG_INT, &port, "8080", 1, 65535, "port" },
		{ "UT_WAIT", CONFIG_MS, &wait, "2s", 0, 60000, "wait" },
		{ NULL, 0, NULL, NULL, 0, 0, NULL },
	};

	unsetenv("UT_HOST");
	unsetenv("UT_PORT");
	unsetenv("UT_WAIT");
	CHECK(config_load(tab, err, sizeof(err)) == 0);
	CHECK_STR(host, "localhost");
	CHECK(port == 8080 && wait == 2000);
	setenv("UT_PORT", "99999", 1);
	CHECK(config_load(tab, err, sizeof(err)) == -1);
	CHECK(strstr(err, "UT_PORT") != NULL && strstr(err, "99999") != NULL);
	setenv("UT_PORT", "9000", 1);
	setenv("UT_HOST", "db.internal", 1);
	CHECK(config_load(tab, err, sizeof(err)) == 0 && port == 9000);
	CHECK_STR(host, "db.internal");
}

/* A variable set but empty means empty, never the default: "" for a string that may be empty,
 * an error naming the variable for everything else. */
static void
test_empty(void)
{
	const char *host = NULL, *url = NULL, *file = NULL;
	long port = 0, wait = 0;
	bool on = false;
	enum log_level level = LOG_LEVEL_DEBUG;
	char err[256] = "";
	const struct config_entry tab[] = {
		{ "UT_E_URL", CONFIG_STRING_OR_EMPTY, &url, "nats://localhost:4222", 0, 0, "empty: none" },
		{ "UT_E_FILE", CONFIG_STRING, &file, NULL, 0, 0, "empty: none" },
		{ "UT_E_HOST", CONFIG_STRING, &host, "localhost", 0, 0, "host" },
		{ "UT_E_PORT", CONFIG_INT, &port, "8080", 1, 65535, "port" },
		{ "UT_E_WAIT", CONFIG_MS, &wait, "2s", 0, 60000, "wait" },
		{ "UT_E_ON", CONFIG_BOOL, &on, "true", 0, 0, "on" },
		{ "UT_E_LEVEL", CONFIG_LEVEL, &level, "info", 0, 0, "level" },
		{ NULL, 0, NULL, NULL, 0, 0, NULL },
	};
	static const char *const refused[] = { "UT_E_HOST", "UT_E_PORT", "UT_E_WAIT", "UT_E_ON",
		"UT_E_LEVEL" };
	static const char *const defaults[] = { "\"localhost\"", "\"8080\"", "\"2s\"", "\"true\"",
		"\"info\"" };

	for (const struct config_entry *e = tab; e->name != NULL; e++)
		unsetenv(e->name);
	CHECK(config_load(tab, err, sizeof(err)) == 0);
	CHECK_STR(url, "nats://localhost:4222");
	CHECK_STR(file, "");
	CHECK(port == 8080 && wait == 2000 && on && level == LOG_LEVEL_INFO);

	setenv("UT_E_URL", "", 1);
	setenv("UT_E_FILE", "", 1);
	CHECK(config_load(tab, err, sizeof(err)) == 0);
	CHECK_STR(url, "");
	CHECK_STR(file, "");
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		char want[160];

		setenv(refused[i], "", 1);
		CHECK(config_load(tab, err, sizeof(err)) == -1);
		snprintf(want, sizeof(want), "%s is set but empty: unset it for its default %s, or give a "
		    "value", refused[i], defaults[i]);
		CHECK_STR(err, want);
		unsetenv(refused[i]);
	}
	unsetenv("UT_E_URL");
	unsetenv("UT_E_FILE");
}

static void
test_ids(void)
{
	int64_t id = 0;

	CHECK(http_parse_id("1", &id) && id == 1);
	CHECK(http_parse_id("9223372036854775807", &id) && id == INT64_MAX);
	CHECK(!http_parse_id("9223372036854775808", &id));
	CHECK(!http_parse_id("99999999999999999999", &id));
	CHECK(!http_parse_id("0", &id));
	CHECK(!http_parse_id("-1", &id));
	CHECK(!http_parse_id("+1", &id));
	CHECK(!http_parse_id("1x", &id));
	CHECK(!http_parse_id("", &id));
	CHECK(!http_parse_id(NULL, &id));
}

static void
test_percent_and_page(void)
{
	char s[64];
	struct http_page p;

	snprintf(s, sizeof(s), "/users/%%41%%62%%7e%%2F");
	CHECK(percent_decode(s) == 11);
	CHECK_STR(s, "/users/Ab~/");
	/* %00 stays encoded; a lone or short escape is copied as it is. */
	snprintf(s, sizeof(s), "1%%00%%4%%G1%%");
	CHECK(percent_decode(s) == strlen("1%00%4%G1%"));
	CHECK_STR(s, "1%00%4%G1%");

	CHECK(http_page_parse(&p, NULL, NULL) == NULL && p.limit == HTTP_PAGE_LIMIT_DEFAULT && p.after == 0);
	CHECK(http_page_parse(&p, "1000", "0") == NULL && p.limit == 1000 && p.after == 0);
	CHECK(http_page_parse(&p, "007", "42") == NULL && p.limit == 7 && p.after == 42);
	CHECK_STR(http_page_parse(&p, "1001", NULL), "limit");
	CHECK_STR(http_page_parse(&p, "0", NULL), "limit");
	CHECK_STR(http_page_parse(&p, NULL, "-1"), "after");
	CHECK_STR(http_page_parse(&p, NULL, "00"), "after");
}

static void
test_trace_and_uuid(void)
{
	char tp[56], u[37];

	traceparent_new(tp);
	CHECK(traceparent_valid(tp));
	CHECK(traceparent_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
	CHECK(!traceparent_valid("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
	CHECK(!traceparent_valid("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
	CHECK(!traceparent_valid("garbage"));
	uuid_new(u);
	CHECK(uuid_valid(u));
	CHECK(!uuid_valid("not-a-uuid"));
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Event ids are version 4, variant RFC 4122, and never repeat, also across the refills of the
 * random pool (512 bytes: 32 ids) and in another thread. */
static void *
make_ids(void *arg)
{
	char (*ids)[37] = arg;

	for (int i = 0; i < 500; i++)
		uuid_new(ids[i]);
	return NULL;
}

static void
test_uuid_unique(void)
{
	static char ids[1000][37];
	pthread_t t;
	bool shape = true, distinct = true;

	make_ids(ids);
	CHECK(pthread_create(&t, NULL, make_ids, ids[500]) == 0);
	pthread_join(t, NULL);
	for (int i = 0; i < 1000; i++)
		shape = shape && uuid_valid(ids[i]) && ids[i][14] == '4' &&
		    strchr("89ab", ids[i][19]) != NULL;
	CHECK(shape);
	qsort(ids, 1000, sizeof(ids[0]), cmp_str);
	for (int i = 1; i < 1000; i++)
		distinct = distinct && strcmp(ids[i - 1], ids[i]) != 0;
	CHECK(distinct);
}

static void
test_backoff(void)
{
	struct backoff b;
	bool in_range = true;

	backoff_init(&b, 100, 1000);
	for (int i = 0; i < 50; i++) {
		long d = backoff_next(&b);

		if (d < 100 || d > 1000)
			in_range = false;
	}
	CHECK(in_range);
	CHECK(b.cur_ms == 1000);
	backoff_reset(&b);
	CHECK(b.cur_ms == 100);
}

static void
test_failpoints(void)
{
	char err[256];

	setenv("FAILPOINTS", "a.b=error;c.d=pause(1)@2;e.f=on", 1);
	CHECK(failpoint_init(err, sizeof(err)) == 0);
	CHECK(failpoints_armed);
	CHECK(FAILPOINT("a.b") == -1);
	CHECK(FAILPOINT("a.b") == 0);
	/* on: every hit, not only the first */
	CHECK(FAILPOINT("e.f") == -1);
	CHECK(FAILPOINT("e.f") == -1);
	CHECK(FAILPOINT("c.d") == 0);
	CHECK(FAILPOINT("unknown") == 0);
	setenv("FAILPOINTS", "x=explode", 1);
	CHECK(failpoint_init(err, sizeof(err)) == -1);
	CHECK(strstr(err, "explode") != NULL);
	unsetenv("FAILPOINTS");
}

static void
test_metrics(void)
{
	const double bounds[] = { 0.1, 1 };
	struct metrics_series *c = metrics_counter("ut_total", "a counter", "k", "v", NULL);
	struct metrics_series *h = metrics_histogram("ut_seconds", "a histogram", bounds, 2, NULL);
	char *text;

	metrics_add(c, 3);
	metrics_observe(h, 0.05);
	metrics_observe(h, 5);
	CHECK(metrics_counter("ut_total", "a counter", "k", "v", NULL) == c);
	CHECK(metrics_gauge("ut_total", "wrong type", NULL) == NULL);
	text = metrics_render(NULL);
	CHECK(text != NULL);
	if (text != NULL) {
		CHECK(strstr(text, "# TYPE ut_total counter\nut_total{k=\"v\"} 3\n") != NULL);
		CHECK(strstr(text, "ut_seconds_bucket{le=\"0.1\"} 1\n") != NULL);
		CHECK(strstr(text, "ut_seconds_bucket{le=\"+Inf\"} 2\n") != NULL);
		CHECK(strstr(text, "ut_seconds_count 2\n") != NULL);
	}
	free(text);
}

/* A connection string is printed with its password masked, and nothing else changed. */
static void
test_url_redact(void)
{
	char out[256];

	config_url_redact("mongodb://alice:s3cret@127.0.0.1:27017/?authSource=admin", out, sizeof(out));
	CHECK_STR(out, "mongodb://alice:********@127.0.0.1:27017/?authSource=admin");
	config_url_redact("mongodb://127.0.0.1:27017/", out, sizeof(out));
	CHECK_STR(out, "mongodb://127.0.0.1:27017/");
	config_url_redact("nats://user@host:4222", out, sizeof(out));
	CHECK_STR(out, "nats://user@host:4222");
	/* An unescaped '@' or '/' in the password is hidden too. */
	config_url_redact("mongodb://bob:p@ss/w@h1,h2/db", out, sizeof(out));
	CHECK_STR(out, "mongodb://bob:********@h1,h2/db");
	CHECK(strstr(out, "ss/w") == NULL);
	config_url_redact("localhost", out, sizeof(out));
	CHECK_STR(out, "localhost");
	config_url_redact("", out, sizeof(out));
	CHECK_STR(out, "");
}

int
main(void)
{
	test_parsers();
	test_url_redact();
	test_load();
	test_empty();
	test_pg_settings();
	test_ids();
	test_percent_and_page();
	test_trace_and_uuid();
	test_uuid_unique();
	test_backoff();
	test_failpoints();
	test_metrics();
	return unit_report("common");
}
