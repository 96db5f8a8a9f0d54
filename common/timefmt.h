/* Timestamps as text: RFC 3339 in UTC, the form of every time in answers, events and logs. */
#ifndef COMMON_TIMEFMT_H
#define COMMON_TIMEFMT_H

#include <stdint.h>

/* Formats microseconds since the epoch as RFC 3339 UTC with microseconds ("...T10:00:00.123456Z"). */
void rfc3339_us(int64_t us, char out[32]);

#endif
