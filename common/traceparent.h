/* W3C trace context: the traceparent header carried from an HTTP request into its event. */
#ifndef COMMON_TRACEPARENT_H
#define COMMON_TRACEPARENT_H

#include <stdbool.h>

/* Returns true if s is a well-formed version 00 traceparent with non-zero ids. */
bool traceparent_valid(const char *s);
/* Writes a new traceparent with random trace and span ids. */
void traceparent_new(char out[56]);

#endif
