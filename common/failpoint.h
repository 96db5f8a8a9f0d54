/* Named crash points for failure-injection tests, armed only through the FAILPOINTS variable.
 *
 *   FAILPOINTS="relay.after_acks_before_commit=crash;consumer.before_ack=pause(3000)"
 *
 * Actions: crash (SIGKILL the process at once), pause(MS) (sleep), error (make the call site fail
 * once), on (return -1 at every hit: a switch for a test-only branch beside the real path). An
 * action may end in @N to fire on the N-th hit only (1 is the first). When FAILPOINTS is unset a
 * failpoint costs one load of a global flag. */
#ifndef COMMON_FAILPOINT_H
#define COMMON_FAILPOINT_H

#include <stdbool.h>

extern bool failpoints_armed;

/* Parses FAILPOINTS; returns -1 with err filled when it is malformed. */
int failpoint_init(char *err, unsigned long errlen) __attribute__((warn_unused_result));
/* Evaluates the named point: crashes, pauses, or returns -1 for "error" and "on", else 0. */
int failpoint_eval(const char *name);

#define FAILPOINT(name) (failpoints_armed ? failpoint_eval(name) : 0)

#endif
