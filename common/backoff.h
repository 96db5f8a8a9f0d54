/* How long to wait before the next retry: exponential backoff with full jitter. */
#ifndef COMMON_BACKOFF_H
#define COMMON_BACKOFF_H

/* The delay is drawn between min_ms and a window that doubles on every retry up to max_ms. */
struct backoff {
	long min_ms, max_ms, cur_ms;
};

void backoff_init(struct backoff *b, long min_ms, long max_ms);
/* Returns the next delay to wait and grows the window. */
long backoff_next(struct backoff *b);
/* Shrinks the window back to min_ms, after a success. */
void backoff_reset(struct backoff *b);

#endif
