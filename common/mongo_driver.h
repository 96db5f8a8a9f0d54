/* The MongoDB driver set up alike in every process that uses it: its messages as lines of our log,
 * no shared-memory segment left behind by a killed process, and connection strings parsed with the
 * timeouts that let a caller give up or back off, and without their password in any message. */
#ifndef COMMON_MONGO_DRIVER_H
#define COMMON_MONGO_DRIVER_H

#include <mongoc/mongoc.h>
#include <stddef.h>

/* Once per process, after the arguments are read (--help answers without the driver), and once at
 * the end. */
void mongo_driver_init(void);
void mongo_driver_cleanup(void);

/* Parses uri (MONGODB_URI), the driver's messages going to our log, and sets what it does not set itself: server selection and connect
 * timeouts of timeout_ms, a socket timeout of five times that (without them a call waits 30 s for
 * a server that is down), a heartbeat of 1 s, and appname unless NULL. Returns a new URI the
 * caller mongoc_uri_destroy()s, or NULL with err filled; err shows the URI without its password. */
mongoc_uri_t *mongo_uri_parse(const char *uri, long timeout_ms, const char *appname, char *err,
    size_t errlen);

#endif
