/* Small helpers every process needs: a few macros, and the headers of clocks, backoff, randomness
 * and uuids, the shutdown flag, traceparent and time formatting, so that one include brings them. */
#ifndef COMMON_UTIL_H
#define COMMON_UTIL_H

#include "backoff.h"
#include "clock.h"
#include "random.h"
#include "shutdown.h"
#include "timefmt.h"
#include "traceparent.h"

/* The value of one hexadecimal digit (either case), or -1. */
static inline int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* A macro's value as a string literal (XSTR(1000) is "1000"). */
#define STR_(x) #x
#define XSTR(x) STR_(x)

#endif
