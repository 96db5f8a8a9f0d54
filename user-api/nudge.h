/* Wakes the relay after a commit with a fire-and-forget core-NATS message; losing one is harmless. */
#ifndef USER_API_NUDGE_H
#define USER_API_NUDGE_H

#include <stddef.h>

/* Starts connecting in the background; an empty url disables nudges. Returns -1 with err filled
 * only for a malformed URL. */
int nudge_start(const char *url, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Publishes one nudge if connected; never blocks on the network, never fails the caller. */
void nudge_send(void);
void nudge_stop(void);

#endif
