/* Checking and making W3C traceparent headers ("00-<trace id>-<parent id>-<flags>"). */
#include "traceparent.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "random.h"

/* n lowercase hex digits, not all zero (an all-zero id is invalid). */
static bool
hex_run(const char *s, size_t n)
{
	bool nonzero = false;

	for (size_t i = 0; i < n; i++) {
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return false;
		if (s[i] != '0')
			nonzero = true;
	}
	return nonzero;
}

bool
traceparent_valid(const char *s)
{
	/* version "00" - 32 hex trace id - 16 hex parent id - 2 hex flags */
	return s != NULL && strlen(s) == 55 && s[0] == '0' && s[1] == '0' && s[2] == '-' &&
	    hex_run(s + 3, 32) && s[35] == '-' && hex_run(s + 36, 16) && s[52] == '-' &&
	    isxdigit((unsigned char)s[53]) && isxdigit((unsigned char)s[54]);
}

/* v as 16 lowercase hex digits at out. */
static void
hex16(char *out, uint64_t v)
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 15; i >= 0; i--, v >>= 4)
		out[i] = digits[v & 0xf];
}

void
traceparent_new(char out[56])
{
	/* "00-%016llx%016llx-%016llx-01", written by hand: it is made for every request that
	 * brings none, and snprintf's format parsing cost more than the random bits. */
	memcpy(out, "00-", 3);
	hex16(out + 3, random_u64() | 1);
	hex16(out + 19, random_u64());
	out[35] = '-';
	hex16(out + 36, random_u64() | 1);
	memcpy(out + 52, "-01", 4);
}
