/* Exponential backoff with full jitter, so that processes retrying the same server spread out. */
#include "backoff.h"

#include <stdint.h>

#include "random.h"

void
backoff_init(struct backoff *b, long min_ms, long max_ms)
{
	b->min_ms = min_ms;
	b->max_ms = max_ms;
	b->cur_ms = min_ms;
}

long
backoff_next(struct backoff *b)
{
	long d = b->min_ms + (long)(random_u64() % (uint64_t)(b->cur_ms - b->min_ms + 1));

	b->cur_ms = b->cur_ms * 2 > b->max_ms ? b->max_ms : b->cur_ms * 2;
	return d;
}

void
backoff_reset(struct backoff *b)
{
	b->cur_ms = b->min_ms;
}
