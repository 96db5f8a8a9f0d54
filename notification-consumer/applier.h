/* The apply loop: one thread pulls USER_EVENTS in stream order and hands each event to the lane
 * of its user (CONSUMER_LANES threads), so there is one writer per user; a lane applies its events
 * in bulk writes and acks each only after MongoDB confirmed its effect. */
#ifndef CONSUMER_APPLIER_H
#define CONSUMER_APPLIER_H

#include <jansson.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lease.h"
#include "settings.h"
#include "store.h"

struct applier;

/* Borrows nc, store, lease and cfg, which must outlive it; it applies only while the lease is
 * held. The caller applier_free()s the result. */
struct applier *applier_new(natsConnection *nc, struct store *store, struct lease *lease,
    const struct consumer_settings *cfg, char *err, size_t errlen);
/* Starts the lanes and the thread that fetches for them. */
int applier_start(struct applier *a, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Waits for the threads to stop (on the shutdown flag): each lane finishes the event in hand and
 * hands the rest back. */
void applier_join(struct applier *a);
void applier_free(struct applier *a);

/* The http_ready_fn of the process: NATS, MongoDB and the durable consumer in place. */
bool applier_ready(void *arg, json_t **out);

/* Called by a lane (several at once) when MongoDB confirmed that the copy of user_id is at version
 * or past it (the event applied, or was stale), before the ack. It must be quick, thread-safe and
 * must not block. */
typedef void (*applier_copy_at_fn)(void *arg, int64_t user_id, int64_t version);
/* Sets the function above (NULL: none), before applier_start(); it wakes reads that wait for a
 * version. */
void applier_on_copy_at(struct applier *a, applier_copy_at_fn fn, void *arg);

/* Blocks until another event was applied or ms passed. */
void applier_wait_applied(struct applier *a, long ms);

/* Puts the event's id and its user into the calling thread's log scope (common/log.h), and the
 * trace id of m's traceparent header when m is not NULL and the header is valid: on every line
 * logged until log_scope_clear(). Shared with replay. */
void applier_log_scope(const struct event *ev, natsMsg *m);

/* Lowest-level step shared with replay: the event in m, or the reason it is poison. */
int applier_decode(natsMsg *m, struct event *ev, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
