/* What every libFuzzer target of test/fuzz/ shares: named properties, checked after each call, and
 * the text checks they are made of.
 *
 * A property that does not hold prints `fuzz property "<name>" failed: ...` with the text at fault
 * (escaped) and aborts, which libFuzzer reports as a crash and saves as a reproducer. A property
 * named in the environment variable FUZZ_XFAIL (names separated by commas or spaces) is not
 * enforced: test/fuzz/run.sh sets it for the properties test/fuzz/xfail.txt lists as known to
 * fail, so that the rest of the target keeps being fuzzed for crashes until the fix lands. */
#ifndef TEST_FUZZ_H
#define TEST_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether the property name is listed in FUZZ_XFAIL. */
static inline bool
fuzz_xfail(const char *name)
{
	const char *list = getenv("FUZZ_XFAIL");
	size_t n = strlen(name);

	for (const char *p = list; p != NULL && *p != '\0';) {
		size_t len = strcspn(p, ", ");

		if (len == n && strncmp(p, name, n) == 0)
			return true;
		p += len;
		p += strspn(p, ", ");
	}
	return false;
}

/* Prints s (len bytes) to stderr with every byte outside printable ASCII as \xNN. */
static inline void
fuzz_print_escaped(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7F && c != '\\')
			fputc(c, stderr);
		else
			fprintf(stderr, "\\x%02x", c);
	}
}

/* Reports property name as failed (why, then the text at fault) and aborts, unless FUZZ_XFAIL
 * lists it. */
static inline void
fuzz_fail(const char *name, const char *file, int line, const char *why, const char *text, size_t len)
{
	if (fuzz_xfail(name))
		return;
	fprintf(stderr, "\nfuzz property \"%s\" failed at %s:%d: %s\n    text: \"", name, file, line, why);
	if (text != NULL)
		fuzz_print_escaped(text, len);
	fprintf(stderr, "\"\n");
	abort();
}

/* Checks cond; on failure reports property name with why and the text (len bytes) at fault. */
#define FUZZ_PROPERTY(name, cond, why, text, len)                                       \
	do {                                                                                \
		if (!(cond))                                                                    \
			fuzz_fail((name), __FILE__, __LINE__, (why), (text), (len));                 \
	} while (0)

/* The same for a NUL-terminated text. */
#define FUZZ_PROPERTY_STR(name, cond, why, text)                                        \
	FUZZ_PROPERTY(name, cond, why, (text), (text) != NULL ? strlen(text) : 0)

/* True when s (len bytes) is valid UTF-8 as common/utf8.c defines it. */
static inline bool
fuzz_utf8_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq((const unsigned char *)s + i, len - i);

		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* True when s (len bytes) holds a C0 control byte or DEL. */
static inline bool
fuzz_has_ascii_control(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7F)
			return true;
	return false;
}

/* True when valid UTF-8 s (len bytes) holds a control character: C0, DEL or C1 (U+0080..U+009F,
 * encoded C2 80..C2 9F). */
static inline bool
fuzz_has_control(const char *s, size_t len)
{
	if (fuzz_has_ascii_control(s, len))
		return true;
	for (size_t i = 0; i + 1 < len; i++)
		if ((unsigned char)s[i] == 0xC2 && (unsigned char)s[i + 1] >= 0x80 &&
		    (unsigned char)s[i + 1] <= 0x9F)
			return true;
	return false;
}

/* A NUL-terminated copy of data (size bytes; a NUL inside ends the string early), or NULL when
 * out of memory. The caller free()s it. */
static inline char *
fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s != NULL) {
		memcpy(s, data, size);
		s[size] = '\0';
	}
	return s;
}

#endif
