/* Wakes the relay after a commit with a fire-and-forget core-NATS message; losing one is harmless. */
#ifndef USER_API_NUDGE_H
#define USER_API_NUDGE_H

#include <stddef.h>

#include "natsconn.h"

/* Starts connecting in the background; an empty URL disables nudges. Returns -1 with err filled
 * for what retrying cannot mend (natsconn_open): a malformed URL, refused credentials. */
int nudge_start(const struct nats_settings *nats, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Publishes one nudge if connected; never blocks on the network, never fails the caller. */
void nudge_send(void);
void nudge_stop(void);

#endif
