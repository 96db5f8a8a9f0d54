/* Connecting to NATS the way every process here must: retry at start, reconnect forever. */
#ifndef COMMON_NATSCONN_H
#define COMMON_NATSCONN_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>

/* user-api publishes an empty core-NATS message here after each commit to wake the relay;
 * losing one is harmless because the relay also polls. */
#define OUTBOX_NUDGE_SUBJECT "outbox.nudge"

/* Starts connecting to url and returns at once. The library keeps retrying in the background when
 * the server is down (at start too) and reconnects forever after a loss; the connection is usable
 * once natsconn_ok() says so. Returns NULL with err filled only for a bad URL or no memory. The
 * caller natsConnection_Destroy()s the result. */
natsConnection *natsconn_open(const char *url, const char *name, char *err, size_t errlen);
bool natsconn_ok(natsConnection *nc);

#endif
