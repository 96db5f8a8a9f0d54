/* Strict UTF-8: what the services accept from outside, and what may go into a JSON answer. */
#ifndef COMMON_UTF8_H
#define COMMON_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. Rejects overlongs,
 * surrogates and code points above U+10FFFF. */
size_t utf8_seq(const unsigned char *s, size_t n);

/* Replaces, in place, every byte of s (NUL-terminated) that is not part of a valid sequence with
 * '?': for text built from bytes of the outside (a path, a query value) or cut short by a
 * buffer, which jansson would refuse to put into a JSON string. */
void utf8_scrub(char *s);

#endif
