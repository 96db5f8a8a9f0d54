/* The two clocks every process reads: monotonic milliseconds for timeouts, wall microseconds for timestamps. */
#ifndef COMMON_CLOCK_H
#define COMMON_CLOCK_H

#include <stdint.h>

/* Milliseconds on the monotonic clock. */
int64_t mono_ms(void);
/* Microseconds since the epoch. */
int64_t wall_us(void);

#endif
