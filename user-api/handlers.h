/* The REST endpoints of users. */
#ifndef USER_API_HANDLERS_H
#define USER_API_HANDLERS_H

#include <jansson.h>
#include <stdbool.h>

#include "httpd.h"

/* Ends with a {NULL} entry; the routes' argument is the struct user_store. The handlers run on
 * the event loop's thread and never block: each suspends its request until its call on the
 * store ends. */
extern const struct http_route user_api_routes[];

/* Readiness: a PostgreSQL connection is open (arg: the struct user_store). */
bool user_api_ready(void *arg, json_t **out);

#endif
