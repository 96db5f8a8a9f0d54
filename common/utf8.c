/* Validating UTF-8 one sequence at a time, quoting text from outside into valid UTF-8, and the one
 * classification of the characters that break, reorder or hide text. */
#include "utf8.h"

#include <stdio.h>
#include <string.h>

size_t
utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned c = s[0];

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF) {
		if (n < 2 || (s[1] & 0xC0) != 0x80)
			return 0;
		*cp = (uint32_t)(c & 0x1F) << 6 | (s[1] & 0x3F);
		return 2;
	}
	if (c >= 0xE0 && c <= 0xEF) {
		if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
			return 0;
		if (c == 0xE0 && s[1] < 0xA0)
			return 0;	/* overlong */
		if (c == 0xED && s[1] >= 0xA0)
			return 0;	/* surrogate */
		*cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
		return 3;
	}
	if (c >= 0xF0 && c <= 0xF4) {
		if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
			return 0;
		if (c == 0xF0 && s[1] < 0x90)
			return 0;	/* overlong */
		if (c == 0xF4 && s[1] >= 0x90)
			return 0;	/* above U+10FFFF */
		*cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
		    (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
		return 4;
	}
	return 0;
}

size_t
utf8_seq(const unsigned char *s, size_t n)
{
	uint32_t cp;

	return utf8_decode(s, n, &cp);
}

size_t
utf8_prefix(const char *s, size_t max)
{
	size_t len = strlen(s), i = 0;

	while (i < len) {
		size_t n = utf8_seq((const unsigned char *)s + i, len - i);

		if (n == 0)
			n = 1;		/* an invalid byte is a unit of its own */
		if (i + n > max)
			break;
		i += n;
	}
	return i;
}

bool
utf8_quote(char *out, size_t outsize, const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t o = 0;

	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq(u + i, len - i);

		if (n == 0) {
			if (o + 4 >= outsize)
				goto cut;
			snprintf(out + o, 5, "\\x%02X", u[i]);
			o += 4;
			i++;
			continue;
		}
		if (o + n >= outsize)
			goto cut;
		memcpy(out + o, u + i, n);
		o += n;
		i += n;
	}
	out[o] = '\0';
	return true;
cut:
	out[o] = '\0';
	return false;
}

enum utf8_class
utf8_classify(uint32_t cp)
{
	if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F))
		return UTF8_CONTROL;
	if (cp < 0xAD)
		return UTF8_PLAIN;
	if (cp == 0x061C || cp == 0x200E || cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) ||
	    (cp >= 0x2066 && cp <= 0x2069))
		return UTF8_BIDI;
	if (cp == 0xAD || cp == 0x200B || (cp >= 0x2060 && cp <= 0x2064) || cp == 0xFEFF)
		return UTF8_INVISIBLE;
	if (cp == 0x200C || cp == 0x200D)
		return UTF8_JOINER;
	if (cp == 0x2028 || cp == 0x2029)
		return UTF8_SEPARATOR;
	return UTF8_PLAIN;
}

/* The class of the character at s[i] (i < len), with its code point; an invalid byte is
 * UTF8_INVALID. *n is its length in bytes. */
static enum utf8_class
class_at(const char *s, size_t len, size_t i, uint32_t *cp, size_t *n)
{
	*n = utf8_decode((const unsigned char *)s + i, len - i, cp);
	if (*n == 0) {
		*cp = (unsigned char)s[i];
		*n = 1;
		return UTF8_INVALID;
	}
	return utf8_classify(*cp);
}

/* A joiner's neighbour that lets it stay: a character of a script beyond ASCII, not itself one of
 * the classes above. */
static bool
joins(enum utf8_class cls, uint32_t cp)
{
	return cls == UTF8_PLAIN && cp >= 0x80;
}

bool
utf8_find(const char *s, size_t len, unsigned mask, struct utf8_found *f)
{
	enum utf8_class prev_cls = UTF8_INVALID;	/* nothing before the start: no neighbour */
	uint32_t prev_cp = 0;

	for (size_t i = 0, index = 0; i < len; index++) {
		uint32_t cp, next_cp = 0;
		size_t n, next_n;
		enum utf8_class cls = class_at(s, len, i, &cp, &n), next_cls = UTF8_INVALID;

		if (cls == UTF8_JOINER) {
			if (i + n < len)
				next_cls = class_at(s, len, i + n, &next_cp, &next_n);
			if (joins(prev_cls, prev_cp) && joins(next_cls, next_cp))
				cls = UTF8_PLAIN;
		}
		if (cls != UTF8_PLAIN && (mask & UTF8_MASK(cls))) {
			if (f != NULL)
				*f = (struct utf8_found){ cls, cp, index };
			return true;
		}
		/* A joiner that was let stay is no letter: a second one right after it is refused. */
		prev_cls = utf8_classify(cp) == UTF8_JOINER ? UTF8_JOINER : cls;
		prev_cp = cp;
		i += n;
	}
	return false;
}

const char *
utf8_class_name(enum utf8_class cls)
{
	switch (cls) {
	case UTF8_PLAIN:
		return "ordinary characters";
	case UTF8_CONTROL:
		return "control characters";
	case UTF8_BIDI:
		return "bidirectional formatting characters";
	case UTF8_INVISIBLE:
		return "invisible characters";
	case UTF8_JOINER:
		return "zero-width joiners outside a word";
	case UTF8_SEPARATOR:
		return "line or paragraph separators";
	case UTF8_INVALID:
		return "bytes that are not UTF-8";
	}
	return "unknown characters";
}
