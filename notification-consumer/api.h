/* The read API on port 8081: the copy of each user, the list, and the applied events. */
#ifndef CONSUMER_API_H
#define CONSUMER_API_H

#include "applier.h"
#include "httpd.h"
#include "store.h"

struct api {
	struct store *store;		/* borrowed */
	struct applier *applier;	/* borrowed; wakes reads that wait for a version */
	long wait_max_ms;		/* default and cap of ?wait= */
};

/* The route table; the handlers take a struct api * as their argument. */
extern const struct http_route api_routes[];

#endif
