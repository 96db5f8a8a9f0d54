/* Prometheus metrics: counters, gauges and histograms, safe to update from any thread. */
#ifndef COMMON_METRICS_H
#define COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct metrics_series;

/* Finds or registers a series. labels is the text inside the braces (`code="201"`) or NULL.
 * Series live until the process exits; the pointer may be cached. A name registered with another
 * type returns NULL, and the update functions accept NULL as a no-op. */
struct metrics_series *metrics_counter(const char *name, const char *help, const char *labels);
struct metrics_series *metrics_gauge(const char *name, const char *help, const char *labels);
/* bounds: ascending upper bounds, copied; +Inf is implied. */
struct metrics_series *metrics_histogram(const char *name, const char *help, const char *labels,
    const double *bounds, size_t nbounds);

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
