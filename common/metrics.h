/* Prometheus metrics: counters, gauges and histograms, safe to update from any thread. */
#ifndef COMMON_METRICS_H
#define COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct metrics_series;

/* The most series one family (one metric name) may hold. Label values that come from outside are
 * mapped to fixed sets by the caller (known methods or "other", route templates); this cap is the
 * backstop for a mistake there: beyond it a family takes no new series, so memory and the size of
 * /metrics stay bounded whatever clients send. */
#define METRICS_MAX_SERIES 1000

/* Finds or registers a series. After help come its labels as pairs of name and value, ended by
 * NULL: metrics_counter("http_requests_total", "...", "route", route, "code", "200", NULL), or
 * metrics_counter(name, help, NULL) for none. A label name is ours ([a-zA-Z_][a-zA-Z0-9_]*); a
 * value may hold any bytes: it is escaped here as the text format says (\\, \" and \n, invalid
 * UTF-8 as U+FFFD), the one place that does it. Series live until the process exits; the pointer
 * may be cached. Returns NULL for a name registered with another type, a bad label name, a
 * family already at METRICS_MAX_SERIES (counted in metrics_series_refused_total{metric=name}),
 * or no memory; the update functions accept NULL as a no-op. */
struct metrics_series *metrics_counter(const char *name, const char *help, ...)
    __attribute__((sentinel));
struct metrics_series *metrics_gauge(const char *name, const char *help, ...)
    __attribute__((sentinel));
/* bounds: ascending upper bounds, copied; +Inf is implied. Labels as for metrics_counter(). */
struct metrics_series *metrics_histogram(const char *name, const char *help, const double *bounds,
    size_t nbounds, ...) __attribute__((sentinel));

void metrics_add(struct metrics_series *s, uint64_t n);
void metrics_set(struct metrics_series *s, double v);
void metrics_observe(struct metrics_series *s, double v);

/* Latency buckets in seconds, from 0.5 ms to 10 s. */
extern const double metrics_latency_bounds[];
extern const size_t metrics_latency_nbounds;

/* Renders every series as Prometheus text. Returns a malloc()ed string the caller frees, or NULL
 * when out of memory. */
char *metrics_render(size_t *len);

#endif
