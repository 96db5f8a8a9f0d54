/* Token buckets per client address in a set-associative table: an address hashes (with a random
 * key) to one set of WAYS entries, and a new address takes the set's free entry or the one that
 * was used the longest ago. One lock: a take is a few dozen instructions. */
#include "ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "random.h"

#define WAYS 8
#define SETS (RATELIMIT_SLOTS / WAYS)

struct bucket {
	double tokens;
	int64_t at_ms;		/* when tokens was computed; 0: the entry is free */
	uint32_t addr;
};

struct ratelimit {
	pthread_mutex_t mu;
	double per_ms;		/* tokens added a millisecond */
	double burst;
	uint64_t key;
	struct bucket b[SETS][WAYS];
};

struct ratelimit *
ratelimit_new(long per_second, long burst)
{
	struct ratelimit *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	pthread_mutex_init(&r->mu, NULL);
	r->per_ms = (double)(per_second > 0 ? per_second : 1) / 1000.0;
	r->burst = (double)(burst > 0 ? burst : 1);
	r->key = random_u64();
	return r;
}

void
ratelimit_free(struct ratelimit *r)
{
	if (r == NULL)
		return;
	pthread_mutex_destroy(&r->mu);
	free(r);
}

/* splitmix64's finalizer: every bit of the address moves every bit of the set number. */
static size_t
set_of(const struct ratelimit *r, uint32_t addr)
{
	uint64_t z = (uint64_t)addr ^ r->key;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return (size_t)(z % SETS);
}

/* addr's entry, made (with a full bucket) when the address is new. */
static struct bucket *
bucket_of(struct ratelimit *r, uint32_t addr, int64_t now_ms)
{
	struct bucket *set = r->b[set_of(r, addr)], *victim = &set[0];

	for (size_t i = 0; i < WAYS; i++) {
		if (set[i].at_ms != 0 && set[i].addr == addr)
			return &set[i];
		if (set[i].at_ms < victim->at_ms)
			victim = &set[i];
	}
	victim->addr = addr;
	victim->tokens = r->burst;
	/* 0 marks a free entry: a monotonic clock that reads 0 is taken as 1 ms. */
	victim->at_ms = now_ms > 0 ? now_ms : 1;
	return victim;
}

bool
ratelimit_take(struct ratelimit *r, uint32_t addr, int64_t now_ms, long *retry_after_s)
{
	struct bucket *b;
	bool ok;

	pthread_mutex_lock(&r->mu);
	b = bucket_of(r, addr, now_ms);
	if (now_ms > b->at_ms) {
		b->tokens += (double)(now_ms - b->at_ms) * r->per_ms;
		if (b->tokens > r->burst)
			b->tokens = r->burst;
		b->at_ms = now_ms;
	}
	ok = b->tokens >= 1.0;
	if (ok) {
		b->tokens -= 1.0;
	} else {
		double wait_ms = ceil((1.0 - b->tokens) / r->per_ms);
		long s = (long)ceil(wait_ms / 1000.0);

		*retry_after_s = s > 0 ? s : 1;
	}
	pthread_mutex_unlock(&r->mu);
	return ok;
}
