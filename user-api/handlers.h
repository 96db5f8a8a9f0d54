/* The REST endpoints of users. */
#ifndef USER_API_HANDLERS_H
#define USER_API_HANDLERS_H

#include <jansson.h>
#include <stdbool.h>

#include "httpd.h"

/* Ends with a {NULL} entry; the handlers use user_store_get() of their thread. */
extern const struct http_route user_api_routes[];

/* Readiness: PostgreSQL answers. */
bool user_api_ready(void *arg, json_t **out);

#endif
