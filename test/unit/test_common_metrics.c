/* The metrics registry: label values escaped as the text format says, series bounded per metric. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "unit.h"

static size_t
count_lines_with(const char *text, const char *prefix)
{
	size_t n = 0, plen = strlen(prefix);

	for (const char *l = text; l != NULL && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
		n += strncmp(l, prefix, plen) == 0;
	return n;
}

static void
test_escaping(void)
{
	struct metrics_series *s = metrics_counter("ut_escape_total", "help with \\ and\nline",
	    "method", "X\"Y", "path", "a\\b\nc", "bad", "\xff" "ok", NULL);
	char *text;

	CHECK(s != NULL);
	metrics_add(s, 2);
	/* The same values find the same series. */
	CHECK(metrics_counter("ut_escape_total", "help", "method", "X\"Y", "path", "a\\b\nc", "bad",
	    "\xff" "ok", NULL) == s);
	/* A label name is ours: anything but [a-zA-Z_][a-zA-Z0-9_]* is refused. */
	CHECK(metrics_counter("ut_escape_total", "help", "me\"thod", "x", NULL) == NULL);
	CHECK(metrics_counter("ut_escape_total", "help", "1x", "x", NULL) == NULL);
	text = metrics_render(NULL);
	CHECK(text != NULL);
	if (text != NULL) {
		CHECK(strstr(text, "# HELP ut_escape_total help with \\\\ and\\nline\n") != NULL);
		CHECK(strstr(text, "ut_escape_total{method=\"X\\\"Y\",path=\"a\\\\b\\nc\","
		    "bad=\"\xef\xbf\xbdok\"} 2\n") != NULL);
	}
	free(text);
}

static void
test_bound(void)
{
	char v[32], *text;
	size_t len = 0;
	struct metrics_series *first = NULL;
	int wrong = 0;

	for (int i = 0; i < METRICS_MAX_SERIES + 500; i++) {
		struct metrics_series *s;

		snprintf(v, sizeof(v), "v%d", i);
		s = metrics_counter("ut_many_total", "many", "k", v, NULL);
		if (i == 0)
			first = s;
		wrong += (s != NULL) != (i < METRICS_MAX_SERIES);
		metrics_add(s, 1);
	}
	CHECK(wrong == 0);
	/* Series already there are still found. */
	CHECK(metrics_counter("ut_many_total", "many", "k", "v0", NULL) == first && first != NULL);
	text = metrics_render(&len);
	CHECK(text != NULL);
	if (text != NULL) {
		CHECK(count_lines_with(text, "ut_many_total{") == METRICS_MAX_SERIES);
		CHECK(strstr(text, "metrics_series_refused_total{metric=\"ut_many_total\"} 500\n") != NULL);
	}
	free(text);
}

int
main(void)
{
	test_escaping();
	test_bound();
	return unit_report("common_metrics");
}
