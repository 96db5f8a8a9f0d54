/* Percent-decoding of the path and query values of a request, in place. */
#ifndef COMMON_PERCENT_H
#define COMMON_PERCENT_H

#include <stddef.h>

/* Decodes every %XX of s (NUL-terminated) in place, except %00: a decoded NUL would cut the string
 * short and turn "/users/1%00" into "/users/1", so it stays encoded and fails validation. A '%'
 * not followed by two hex digits stays as it is. Returns the new length; the result never holds a
 * NUL before it and is never longer than s was. The bytes decoded need not be UTF-8. */
size_t percent_decode(char *s);

#endif
