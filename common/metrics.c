/* A small Prometheus registry: series are found by name and labels under a lock and updated with
 * atomics, so hot paths may cache the pointer and never lock. */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define REFUSED_NAME "metrics_series_refused_total"
#define REFUSED_HELP "New series not registered because their metric already had " \
	"METRICS_MAX_SERIES series"

enum series_type { SERIES_COUNTER, SERIES_GAUGE, SERIES_HISTOGRAM };

struct metrics_series {
	struct metrics_series *next;
	char *name, *help, *labels;
	enum series_type type;
	_Atomic uint64_t count;		/* counter value, histogram count */
	_Atomic uint64_t bits;		/* gauge value or histogram sum, as double bits */
	double *bounds;
	size_t nbounds;
	_Atomic uint64_t *buckets;	/* nbounds entries, non-cumulative */
};

const double metrics_latency_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
	0.25, 0.5, 1, 2.5, 5, 10 };
const size_t metrics_latency_nbounds = sizeof(metrics_latency_bounds) / sizeof(metrics_latency_bounds[0]);

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_series *registry_head, *registry_tail;

static uint64_t
dbits(double v)
{
	uint64_t b;

	memcpy(&b, &v, sizeof(b));
	return b;
}

static double
bitsd(uint64_t b)
{
	double v;

	memcpy(&v, &b, sizeof(v));
	return v;
}

static bool
streq0(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Appends the label value v to f escaped as the text format wants it: backslash, double quote and
 * line feed escaped, and each byte that is not valid UTF-8 replaced with U+FFFD. */
static void
escape_label_value(FILE *f, const char *v)
{
	const unsigned char *s = (const unsigned char *)v;
	size_t len = strlen(v);

	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq(s + i, len - i);

		if (n == 0) {
			fputs("\xef\xbf\xbd", f);
			i++;
			continue;
		}
		if (s[i] == '\\' || s[i] == '"')
			fputc('\\', f);
		if (s[i] == '\n')
			fputs("\\n", f);
		else
			fwrite(s + i, 1, n, f);
		i += n;
	}
}

static bool
label_name_valid(const char *n)
{
	if (*n == '\0' || (*n >= '0' && *n <= '9'))
		return false;
	for (; *n; n++)
		if (!(*n == '_' || (*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') ||
		    (*n >= '0' && *n <= '9')))
			return false;
	return true;
}

/* The text inside the braces for the pairs of ap (name, value, ..., NULL): `a="x",b="y"`, its
 * values escaped. Returns NULL for no labels, and sets *bad for a bad label name, a name without
 * a value or no memory; the caller frees the result. */
static char *
labels_text(va_list ap, bool *bad)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	const char *name;
	bool any = false;

	*bad = f == NULL;
	if (f == NULL)
		return NULL;
	while ((name = va_arg(ap, const char *)) != NULL) {
		const char *value = va_arg(ap, const char *);

		if (value == NULL || !label_name_valid(name)) {
			*bad = true;
			break;
		}
		fprintf(f, "%s%s=\"", any ? "," : "", name);
		escape_label_value(f, value);
		fputc('"', f);
		any = true;
	}
	if (fclose(f) != 0)
		*bad = true;
	if (*bad || !any) {
		free(buf);
		return NULL;
	}
	return buf;
}

static struct metrics_series *
series_new(const char *name, const char *help, char *labels, enum series_type type,
    const double *bounds, size_t nbounds)
{
	struct metrics_series *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->name = strdup(name);
	s->help = strdup(help);
	s->labels = labels;
	s->type = type;
	if (nbounds > 0) {
		s->bounds = malloc(nbounds * sizeof(double));
		s->buckets = calloc(nbounds, sizeof(*s->buckets));
		if (s->bounds != NULL)
			memcpy(s->bounds, bounds, nbounds * sizeof(double));
		s->nbounds = nbounds;
	}
	if (s->name == NULL || s->help == NULL ||
	    (nbounds > 0 && (s->bounds == NULL || s->buckets == NULL))) {
		free(s->name);
		free(s->help);
		free(s->bounds);
		free(s->buckets);
		free(s);
		return NULL;
	}
	/* Appending keeps series of one name together as long as callers register them together;
	 * rendering groups by name anyway. */
	if (registry_tail)
		registry_tail->next = s;
	else
		registry_head = s;
	registry_tail = s;
	return s;
}

static struct metrics_series *series_get_locked(const char *name, const char *help, char *labels,
    enum series_type type, const double *bounds, size_t nbounds);

/* Counts a refused series in REFUSED_NAME{metric="name"}; a refusal of that family itself is
 * not counted (it would recurse), and cannot happen before METRICS_MAX_SERIES metric names did. */
static void
count_refusal(const char *name)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	struct metrics_series *s;

	if (strcmp(name, REFUSED_NAME) == 0 || (f = open_memstream(&buf, &len)) == NULL)
		return;
	fputs("metric=\"", f);
	escape_label_value(f, name);
	fputc('"', f);
	if (fclose(f) != 0) {
		free(buf);
		return;
	}
	s = series_get_locked(REFUSED_NAME, REFUSED_HELP, buf, SERIES_COUNTER, NULL, 0);
	if (s != NULL)
		atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

/* With registry_lock held: the series of name with exactly labels (taken over: freed unless it
 * becomes the new series'), or a new one. */
static struct metrics_series *
series_get_locked(const char *name, const char *help, char *labels, enum series_type type,
    const double *bounds, size_t nbounds)
{
	struct metrics_series *s, *found = NULL;
	size_t family = 0;

	for (s = registry_head; s != NULL; s = s->next) {
		if (strcmp(s->name, name) != 0)
			continue;
		if (s->type != type)
			goto refuse;
		if (streq0(s->labels, labels)) {
			found = s;
			break;
		}
		family++;
	}
	if (found != NULL) {
		free(labels);
		return found;
	}
	if (family >= METRICS_MAX_SERIES) {
		count_refusal(name);
		goto refuse;
	}
	if ((s = series_new(name, help, labels, type, bounds, nbounds)) != NULL)
		return s;
refuse:
	free(labels);
	return NULL;
}

static struct metrics_series *
series_get(const char *name, const char *help, enum series_type type, const double *bounds,
    size_t nbounds, va_list ap)
{
	struct metrics_series *s;
	bool bad;
	char *labels = labels_text(ap, &bad);

	if (bad)
		return NULL;
	pthread_mutex_lock(&registry_lock);
	s = series_get_locked(name, help, labels, type, bounds, nbounds);
	pthread_mutex_unlock(&registry_lock);
	return s;
}

struct metrics_series *
metrics_counter(const char *name, const char *help, ...)
{
	struct metrics_series *s;
	va_list ap;

	va_start(ap, help);
	s = series_get(name, help, SERIES_COUNTER, NULL, 0, ap);
	va_end(ap);
	return s;
}

struct metrics_series *
metrics_gauge(const char *name, const char *help, ...)
{
	struct metrics_series *s;
	va_list ap;

	va_start(ap, help);
	s = series_get(name, help, SERIES_GAUGE, NULL, 0, ap);
	va_end(ap);
	return s;
}

struct metrics_series *
metrics_histogram(const char *name, const char *help, const double *bounds, size_t nbounds, ...)
{
	struct metrics_series *s;
	va_list ap;

	va_start(ap, nbounds);
	s = series_get(name, help, SERIES_HISTOGRAM, bounds, nbounds, ap);
	va_end(ap);
	return s;
}

void
metrics_add(struct metrics_series *s, uint64_t n)
{
	if (s != NULL)
		atomic_fetch_add_explicit(&s->count, n, memory_order_relaxed);
}

void
metrics_set(struct metrics_series *s, double v)
{
	if (s != NULL)
		atomic_store_explicit(&s->bits, dbits(v), memory_order_relaxed);
}

void
metrics_observe(struct metrics_series *s, double v)
{
	uint64_t old;

	if (s == NULL || s->type != SERIES_HISTOGRAM)
		return;
	for (size_t i = 0; i < s->nbounds; i++) {
		if (v <= s->bounds[i]) {
			atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
			break;
		}
	}
	atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
	old = atomic_load_explicit(&s->bits, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&s->bits, &old, dbits(bitsd(old) + v),
	    memory_order_relaxed, memory_order_relaxed))
		;
}

/* The count of a counter or a histogram. */
static uint64_t
series_count(const struct metrics_series *s)
{
	return s ? atomic_load_explicit(&((struct metrics_series *)s)->count, memory_order_relaxed) : 0;
}

static void
render_labels(FILE *f, const char *labels, const char *extra)
{
	if (labels == NULL && extra == NULL)
		return;
	fputc('{', f);
	if (labels)
		fputs(labels, f);
	if (labels && extra)
		fputc(',', f);
	if (extra)
		fputs(extra, f);
	fputc('}', f);
}

static void
render_series(FILE *f, struct metrics_series *s)
{
	static const char *const type_names[] = { "counter", "gauge", "histogram" };
	char le[64];
	uint64_t cum = 0;

	(void)type_names;
	switch (s->type) {
	case SERIES_COUNTER:
		fputs(s->name, f);
		render_labels(f, s->labels, NULL);
		fprintf(f, " %llu\n", (unsigned long long)series_count(s));
		break;
	case SERIES_GAUGE:
		fputs(s->name, f);
		render_labels(f, s->labels, NULL);
		fprintf(f, " %.17g\n", bitsd(atomic_load(&s->bits)));
		break;
	case SERIES_HISTOGRAM:
		for (size_t i = 0; i < s->nbounds; i++) {
			cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
			snprintf(le, sizeof(le), "le=\"%g\"", s->bounds[i]);
			fprintf(f, "%s_bucket", s->name);
			render_labels(f, s->labels, le);
			fprintf(f, " %llu\n", (unsigned long long)cum);
		}
		fprintf(f, "%s_bucket", s->name);
		render_labels(f, s->labels, "le=\"+Inf\"");
		fprintf(f, " %llu\n", (unsigned long long)series_count(s));
		fprintf(f, "%s_sum", s->name);
		render_labels(f, s->labels, NULL);
		fprintf(f, " %.17g\n", bitsd(atomic_load(&s->bits)));
		fprintf(f, "%s_count", s->name);
		render_labels(f, s->labels, NULL);
		fprintf(f, " %llu\n", (unsigned long long)series_count(s));
		break;
	}
}

/* HELP text escapes a backslash and a line feed (and, unlike a label value, not a quote). */
static void
render_help(FILE *f, const char *help)
{
	for (const char *c = help; *c != '\0'; c++) {
		if (*c == '\\')
			fputs("\\\\", f);
		else if (*c == '\n')
			fputs("\\n", f);
		else
			fputc(*c, f);
	}
}

char *
metrics_render(size_t *len)
{
	static const char *const type_names[] = { "counter", "gauge", "histogram" };
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);

	if (f == NULL)
		return NULL;
	pthread_mutex_lock(&registry_lock);
	for (struct metrics_series *s = registry_head; s != NULL; s = s->next) {
		bool first = true;

		/* Print each family once, at its first series, with all its series. */
		for (struct metrics_series *p = registry_head; p != s; p = p->next) {
			if (strcmp(p->name, s->name) == 0) {
				first = false;
				break;
			}
		}
		if (!first)
			continue;
		fprintf(f, "# HELP %s ", s->name);
		render_help(f, s->help);
		fprintf(f, "\n# TYPE %s %s\n", s->name, type_names[s->type]);
		for (struct metrics_series *p = s; p != NULL; p = p->next)
			if (strcmp(p->name, s->name) == 0)
				render_series(f, p);
	}
	pthread_mutex_unlock(&registry_lock);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	if (len)
		*len = n;
	return buf;
}
