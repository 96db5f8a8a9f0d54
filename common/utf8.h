/* Strict UTF-8: what the services accept from outside, what may go into a JSON answer, and the one
 * definition of the characters that text shown to people must not hold. */
#ifndef COMMON_UTF8_H
#define COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the valid UTF-8 sequence at s (at most n bytes, n > 0), or 0 if invalid. Rejects
 * overlongs, surrogates and code points above U+10FFFF. */
size_t utf8_seq(const unsigned char *s, size_t n);

/* utf8_seq() that also stores the code point in *cp when the sequence is valid. */
size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* The length of the longest prefix of s (NUL-terminated) of at most max bytes that does not end
 * inside a valid sequence: for "%.*s" of a value from outside, so that a cut never breaks a
 * character the client sent whole. */
size_t utf8_prefix(const char *s, size_t max);

/* Copies len bytes of s into out (outsize > 0 bytes, always NUL-terminated) as valid UTF-8: a
 * valid sequence as it is, each byte that is not part of one as the four characters \xHH, never
 * raw. When out is too small it is cut before the first sequence or escape that does not fit, so at
 * a character boundary. Returns false when it was cut. For every text from outside that is put
 * into a JSON answer (a problem's detail and field). */
bool utf8_quote(char *out, size_t outsize, const char *s, size_t len);

/* Classes of code points for the rules on names and emails: characters that break, reorder or
 * hide text wherever it is shown. One definition for user-api (which refuses them) and the
 * consumer (which dead-letters an event with a control character). */
enum utf8_class {
	UTF8_PLAIN = 0,		/* everything else */
	UTF8_CONTROL,		/* C0 U+0000..U+001F, DEL U+007F, C1 U+0080..U+009F */
	UTF8_BIDI,		/* bidirectional formatting: ALM U+061C, LRM and RLM U+200E..U+200F,
				 * embeddings and overrides U+202A..U+202E, isolates U+2066..U+2069 */
	UTF8_INVISIBLE,		/* zero width, shown as nothing: soft hyphen U+00AD, ZWSP U+200B,
				 * word joiner and invisible operators U+2060..U+2064, BOM U+FEFF */
	UTF8_JOINER,		/* ZWNJ U+200C and ZWJ U+200D: invisible too, but spelling needs them
				 * between letters (Persian, Indic scripts) and emoji sequences */
	UTF8_SEPARATOR,		/* LINE SEPARATOR U+2028, PARAGRAPH SEPARATOR U+2029: line breaks */
	UTF8_INVALID,		/* a byte that is not part of a valid sequence (cp is the byte) */
};

#define UTF8_MASK(cls) (1u << (cls))
/* Everything a name or an email may not hold: user-api's rule. */
#define UTF8_MASK_REFUSED                                                                         \
	(UTF8_MASK(UTF8_CONTROL) | UTF8_MASK(UTF8_BIDI) | UTF8_MASK(UTF8_INVISIBLE) |               \
	    UTF8_MASK(UTF8_JOINER) | UTF8_MASK(UTF8_SEPARATOR) | UTF8_MASK(UTF8_INVALID))

/* The class of one code point (a joiner is UTF8_JOINER wherever it stands). */
enum utf8_class utf8_classify(uint32_t cp);

struct utf8_found {
	enum utf8_class cls;
	uint32_t cp;
	size_t index;		/* in code points from the start, 0 first */
};

/* Finds the first character of s (len bytes) whose class is in mask (UTF8_MASK() bits). A joiner
 * counts only where spelling does not need it: it is accepted between two characters that are
 * both beyond ASCII and of class UTF8_PLAIN, and refused anywhere else (at an end, next to ASCII,
 * next to another invisible character). Returns true with *f filled (f may be NULL), or false. */
bool utf8_find(const char *s, size_t len, unsigned mask, struct utf8_found *f);

/* What a class is called in a message, plural: "control characters", ... */
const char *utf8_class_name(enum utf8_class cls);

#endif
