/* One applying process per durable consumer: a lease renewed by compare-and-set on a JetStream
 * subject. Other processes stand by (and serve reads) and take over when the lease lapses. */
#ifndef CONSUMER_LEASE_H
#define CONSUMER_LEASE_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lease;

/* owner names this process; a restarted process with the same owner (host and port) takes its
 * lease back at once. timeout_ms bounds the wait for each read or write of the lease. Borrows nc.
 * The caller lease_free()s the result. */
struct lease *lease_new(natsConnection *nc, const char *durable, const char *owner, long ttl_ms,
    long timeout_ms, char *err, size_t errlen);
/* Starts the renewing thread. */
int lease_start(struct lease *l, char *err, size_t errlen) __attribute__((warn_unused_result));
/* True while this process may apply: the lease was renewed less than a TTL (minus a margin) ago
 * on the monotonic clock, so a process that was paused longer than that stops by itself. */
bool lease_held(struct lease *l);
/* Changes every time this process takes the lease anew, not when it renews it: a holder that
 * sees it change since its last write knows that another process may have written meanwhile. */
uint64_t lease_term(struct lease *l);
/* Writes who holds it, for /readyz and logs. */
void lease_describe(struct lease *l, char *out, size_t outlen);
/* Stops the thread, hands the lease over (expires it) if held, frees. */
void lease_free(struct lease *l);

#endif
