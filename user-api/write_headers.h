/* The request headers of a write that user-api reads itself: If-Match and Idempotency-Key. */
#ifndef USER_API_WRITE_HEADERS_H
#define USER_API_WRITE_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

#define IDEMPOTENCY_KEY_MAX 200	/* bytes */
#define IF_MATCH_MAX 256	/* bytes of if_match_versions()'s literal, with its NUL */

/* If-Match (v, NULL when absent) into a PostgreSQL bigint[] literal of the versions it accepts,
 * written to buf (n bytes, at least 3): returns NULL when absent or "*" (any version), else buf
 * holding the strong tags of the list ("3", "4" gives {3,4}); weak or malformed tags match nothing,
 * and tags beyond what fits in buf are left out. */
const char *if_match_versions(const char *v, char *buf, size_t n);

/* True when k is 1 to IDEMPOTENCY_KEY_MAX printable ASCII characters. */
bool idempotency_key_valid(const char *k);

#endif
