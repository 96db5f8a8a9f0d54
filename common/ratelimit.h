/* A request rate limit per client address: a token bucket per address, kept in a table of fixed
 * size, so that a flood from many addresses costs no more memory than a few. */
#ifndef COMMON_RATELIMIT_H
#define COMMON_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ratelimit;

/* RATELIMIT_SLOTS addresses are remembered at once (about 200 KiB); when the table is full, the
 * address that made no request for the longest is forgotten, and comes back with a full bucket.
 * Which addresses share a part of the table depends on a random key, so a client cannot choose
 * addresses that push out a throttled one. */
#define RATELIMIT_SLOTS 8192

/* per_second: requests an address may make a second on average (at least 1); burst: how many it
 * may make at once after a pause (at least 1). Returns NULL when out of memory; the caller
 * ratelimit_free()s the result. */
struct ratelimit *ratelimit_new(long per_second, long burst);
void ratelimit_free(struct ratelimit *r);

/* Takes one request's token from addr's bucket at now_ms (a monotonic clock). Returns true when
 * the request may go on; false when the bucket is empty, with *retry_after_s the whole seconds
 * (at least 1) until it holds a token again. Safe from any thread. */
bool ratelimit_take(struct ratelimit *r, uint32_t addr, int64_t now_ms, long *retry_after_s)
    __attribute__((warn_unused_result));

#endif
