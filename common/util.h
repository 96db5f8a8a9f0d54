/* Small helpers every process needs: clocks, backoff, uuids, shutdown signals. */
#ifndef COMMON_UTIL_H
#define COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* A macro's value as a string literal (XSTR(1000) is "1000"). */
#define STR_(x) #x
#define XSTR(x) STR_(x)

/* Milliseconds on the monotonic clock. */
int64_t mono_ms(void);
/* Microseconds since the epoch. */
int64_t wall_us(void);
/* Formats microseconds since the epoch as RFC 3339 UTC with microseconds ("...T10:00:00.123456Z"). */
void rfc3339_us(int64_t us, char out[32]);

/* Exponential backoff with full jitter between min_ms and max_ms. */
struct backoff {
	long min_ms, max_ms, cur_ms;
};
void backoff_init(struct backoff *b, long min_ms, long max_ms);
/* Returns the next delay to wait and grows the window. */
long backoff_next(struct backoff *b);
void backoff_reset(struct backoff *b);

/* Writes a new random (v4) uuid in lowercase text form. */
void uuid_new(char out[37]);
bool uuid_valid(const char *s);

/* Installs SIGTERM and SIGINT handlers that set the shutdown flag, and ignores SIGPIPE. */
void shutdown_signals_install(void);
bool shutdown_requested(void);
void shutdown_request(void);
/* Sleeps up to ms milliseconds; returns early (true) when shutdown was requested. */
bool shutdown_sleep_ms(long ms);

/* A W3C traceparent header: returns true if s is well formed. */
bool traceparent_valid(const char *s);
/* Writes a new traceparent with random trace and span ids. */
void traceparent_new(char out[56]);

#endif
