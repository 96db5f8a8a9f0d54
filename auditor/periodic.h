/* audit --every: a pass at each interval until shutdown, its results as metrics and readiness. */
#ifndef AUDIT_PERIODIC_H
#define AUDIT_PERIODIC_H

#include <jansson.h>
#include <stdbool.h>

#include "settings.h"

struct periodic;

/* Registers the metrics (every kind's gauge at 0). s must outlive the result, which the caller
 * periodic_free()s. NULL when out of memory. */
struct periodic *periodic_new(const struct audit_settings *s);
void periodic_free(struct periodic *p);

/* http_ready_fn for /readyz: ready once a pass reached both stores, until one cannot. Any thread. */
bool periodic_ready(void *arg, json_t **out);

/* Runs a pass every s->every_ms (from the start of one to the start of the next; at once when a
 * pass took longer), until shutdown is requested. A pass that cannot reach a store is logged and
 * tried again sooner: after 1 s, doubling up to the interval. */
void periodic_run(struct periodic *p);

#endif
