/* One applying process per durable consumer: a lease renewed by compare-and-set on a JetStream
 * subject. Other processes stand by (and serve reads) and take over when the lease lapses. */
#ifndef CONSUMER_LEASE_H
#define CONSUMER_LEASE_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lease;

/* owner names this life of this process (a restarted process is another owner and waits for the
 * old lease to lapse). timeout_ms bounds the wait for each read or write of the lease. Borrows
 * nc. The caller lease_free()s the result. */
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
/* Another writer of the copy, next to the lease holder: `replay` announces itself on
 * "consumer.lease.<durable>.writer" ({"until_us"}: wall-clock microseconds), renewed while it
 * runs and set to the moment it ends. FerretDB's update reads, then writes, so a write of that
 * other writer can take a document back past one of the holder's; the holder reads its recent
 * writes back only while such a writer may have been at work. Returns -1 with err filled when it
 * could not publish (no stream CONSUMER_LEASES: no consumer ever ran). */
int lease_announce_writer(jsCtx *js, const char *durable, int64_t until_us, long timeout_ms,
    char *err, size_t errlen) __attribute__((warn_unused_result));
/* What the last announcement said, as read by the lease's thread (at least every second); 0 when
 * there never was one. */
int64_t lease_writer_until(struct lease *l);
/* Writes who holds it, for /readyz and logs. */
void lease_describe(struct lease *l, char *out, size_t outlen);
/* Stops the thread, hands the lease over (expires it) if held, frees. */
void lease_free(struct lease *l);

#endif
