/* The relay loop: win leadership, then move outbox batches to JetStream until shutdown. */
#ifndef RELAY_RELAY_H
#define RELAY_RELAY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "settings.h"

struct relay;

/* Returns a new relay that starts connecting to NATS in the background (PostgreSQL is connected
 * by relay_run()). NULL with err filled for a bad NATS URL or no memory. s must outlive the relay;
 * the caller relay_free()s it. */
struct relay *relay_new(const struct relay_settings *s, char *err, size_t errlen);
void relay_free(struct relay *r);

/* Runs until shutdown_requested(): stands by or leads, and relays batches while leading, up to
 * RELAY_PIPELINE of them in flight. The batches in flight when shutdown is asked for are finished
 * (or rolled back) before it returns. */
void relay_run(struct relay *r);

/* The /readyz callback: PostgreSQL, NATS, stream and role. Fills *out with a new reference. */
bool relay_ready(void *arg, json_t **out);

/* The next poll wait after a batch of claimed rows out of limit, given the previous wait: none
 * when the batch was full, min after a partial one, and growing towards max while idle. */
long relay_next_poll(long prev_ms, long claimed, long limit, long min_ms, long max_ms);

#endif
