/* The two clocks every process reads: monotonic milliseconds for timeouts, wall microseconds for timestamps. */
#ifndef COMMON_CLOCK_H
#define COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on the monotonic clock. */
int64_t mono_ms(void);
/* Microseconds since the epoch. */
int64_t wall_us(void);
/* The time ms milliseconds from now on clock, for pthread_cond_timedwait() on a condition
 * variable that waits on that clock. */
struct timespec clock_after_ms(clockid_t clock, int64_t ms);

#endif
