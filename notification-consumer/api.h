/* The read API on port 8081: the copy of each user, the list, and the applied events. */
#ifndef CONSUMER_API_H
#define CONSUMER_API_H

#include "httpd.h"
#include "store.h"
#include "waiters.h"

struct api {
	struct store *store;		/* borrowed */
	struct waiters *waiters;	/* borrowed; where reads that wait for a version wait */
	long wait_max_ms;		/* default and cap of ?wait= */
	long max_waiters;		/* CONSUMER_MAX_WAITERS, for the 503 beyond it */
};

/* The route table; the handlers take a struct api * as their argument. */
extern const struct http_route api_routes[];

#endif
