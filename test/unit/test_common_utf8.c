/* Unit tests of common/utf8.c: strict sequences, quoting what is not UTF-8, and the classes of
 * characters that names may not hold. */
#include <string.h>

#include "unit.h"
#include "utf8.h"

static size_t
seq(const char *s)
{
	return utf8_seq((const unsigned char *)s, strlen(s));
}

static void
test_seq(void)
{
	CHECK(seq("a") == 1);
	CHECK(seq("\xC3\xA9") == 2);
	CHECK(seq("\xE2\x82\xAC") == 3);
	CHECK(seq("\xF0\x9F\x98\x80") == 4);
	CHECK(seq("\xC3") == 0);		/* cut short */
	CHECK(seq("\xC0\xAF") == 0);		/* overlong */
	CHECK(seq("\xE0\x80\xAF") == 0);	/* overlong */
	CHECK(seq("\xED\xA0\x80") == 0);	/* surrogate */
	CHECK(seq("\xF4\x90\x80\x80") == 0);	/* above U+10FFFF */
	CHECK(seq("\x80") == 0);		/* lone continuation */
	CHECK(seq("\xFF") == 0);
}

static void
test_decode(void)
{
	uint32_t cp = 0;

	CHECK(utf8_decode((const unsigned char *)"\xC3\xA9", 2, &cp) == 2 && cp == 0xE9);
	CHECK(utf8_decode((const unsigned char *)"\xE2\x80\xAE", 3, &cp) == 3 && cp == 0x202E);
	CHECK(utf8_decode((const unsigned char *)"\xF0\x9F\x98\x80", 4, &cp) == 4 && cp == 0x1F600);
	CHECK(utf8_decode((const unsigned char *)"\xE2\x80", 2, &cp) == 0);
}

static const char *
quote(const char *s, size_t outsize)
{
	static char out[128];

	utf8_quote(out, outsize, s, strlen(s));
	return out;
}

static void
test_quote(void)
{
	char out[8];

	CHECK_STR(quote("caf\xC3\xA9 \xE2\x82\xAC", 64), "caf\xC3\xA9 \xE2\x82\xAC");
	/* What is not UTF-8 is shown as an escape of the byte, never raw, never as a guess. */
	CHECK_STR(quote("a\xFF" "b", 64), "a\\xFFb");
	CHECK_STR(quote("x\xE2\x82", 64), "x\\xE2\\x82");
	CHECK_STR(quote("\xC0\xAF.", 64), "\\xC0\\xAF.");
	CHECK_STR(quote("\xED\xA0\x80", 64), "\\xED\\xA0\\x80");
	CHECK_STR(quote("", 64), "");
	/* Cut at a character or an escape, never inside one: "ab" + é needs 5 bytes with the NUL. */
	CHECK_STR(quote("ab\xC3\xA9", 5), "ab\xC3\xA9");
	CHECK_STR(quote("ab\xC3\xA9", 4), "ab");
	CHECK_STR(quote("ab\xFF", 6), "ab");
	CHECK_STR(quote("ab\xFF", 7), "ab\\xFF");
	CHECK_STR(quote("\xF0\x9F\x98\x80", 4), "");
	CHECK(utf8_quote(out, sizeof(out), "1234567", 7));
	CHECK(!utf8_quote(out, sizeof(out), "12345678", 8));
	CHECK_STR(out, "1234567");
	/* len, not the NUL, ends the input. */
	CHECK(utf8_quote(out, sizeof(out), "ab\0c", 2) && strcmp(out, "ab") == 0);
	/* Every byte value: the result is valid UTF-8, whatever the input. */
	for (unsigned b = 0; b < 256; b++) {
		char in[4] = { 'x', (char)b, (char)0x80, 'y' }, big[32];
		size_t len;

		utf8_quote(big, sizeof(big), in, sizeof(in));
		len = strlen(big);
		for (size_t i = 0; i < len;) {
			size_t n = utf8_seq((const unsigned char *)big + i, len - i);

			CHECK(n > 0);
			i += n ? n : 1;
		}
	}
}

static void
test_prefix(void)
{
	CHECK(utf8_prefix("abc", 40) == 3);
	CHECK(utf8_prefix("abc", 2) == 2);
	/* x + é é: a cut at 4 bytes would split the second é. */
	CHECK(utf8_prefix("x\xC3\xA9\xC3\xA9", 4) == 3);
	CHECK(utf8_prefix("x\xC3\xA9\xC3\xA9", 5) == 5);
	/* An invalid byte is a unit of its own: it may end the prefix. */
	CHECK(utf8_prefix("x\xFF\xFF", 2) == 2);
	CHECK(utf8_prefix("", 40) == 0);
}

static enum utf8_class
cls(uint32_t cp)
{
	return utf8_classify(cp);
}

static void
test_classify(void)
{
	/* Control: C0, DEL and C1, the one definition user-api and the consumer share. */
	CHECK(cls(0x00) == UTF8_CONTROL && cls(0x0A) == UTF8_CONTROL && cls(0x1F) == UTF8_CONTROL);
	CHECK(cls(0x7F) == UTF8_CONTROL && cls(0x80) == UTF8_CONTROL && cls(0x85) == UTF8_CONTROL);
	CHECK(cls(0x9F) == UTF8_CONTROL);
	CHECK(cls(' ') == UTF8_PLAIN && cls('~') == UTF8_PLAIN && cls(0xA0) == UTF8_PLAIN);
	CHECK(cls(0xE9) == UTF8_PLAIN && cls(0x1F600) == UTF8_PLAIN && cls(0xFE0F) == UTF8_PLAIN);
	/* Bidirectional formatting. */
	for (uint32_t c = 0x202A; c <= 0x202E; c++)
		CHECK(cls(c) == UTF8_BIDI);
	for (uint32_t c = 0x2066; c <= 0x2069; c++)
		CHECK(cls(c) == UTF8_BIDI);
	CHECK(cls(0x200E) == UTF8_BIDI && cls(0x200F) == UTF8_BIDI && cls(0x061C) == UTF8_BIDI);
	CHECK(cls(0x202F) == UTF8_PLAIN && cls(0x2065) == UTF8_PLAIN && cls(0x206A) == UTF8_PLAIN);
	/* Invisible, joiners, separators. */
	CHECK(cls(0x200B) == UTF8_INVISIBLE && cls(0x2060) == UTF8_INVISIBLE);
	CHECK(cls(0x2064) == UTF8_INVISIBLE && cls(0xFEFF) == UTF8_INVISIBLE);
	CHECK(cls(0xAD) == UTF8_INVISIBLE);
	CHECK(cls(0x200C) == UTF8_JOINER && cls(0x200D) == UTF8_JOINER);
	CHECK(cls(0x2028) == UTF8_SEPARATOR && cls(0x2029) == UTF8_SEPARATOR);
}

static bool
find(const char *s, unsigned mask, struct utf8_found *f)
{
	return utf8_find(s, strlen(s), mask, f);
}

static void
test_find(void)
{
	struct utf8_found f;

	CHECK(!find("Jos\xC3\xA9 \xE6\x9D\x8E", UTF8_MASK_REFUSED, &f));
	/* "evil" + RLO + "gpj.exe": shown as "evilexe.jpg". */
	CHECK(find("evil\xE2\x80\xAEgpj.exe", UTF8_MASK_REFUSED, &f));
	CHECK(f.cls == UTF8_BIDI && f.cp == 0x202E && f.index == 4);
	CHECK(find("a\xE2\x81\xA6" "b", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_BIDI && f.cp == 0x2066);
	CHECK(find("\xE2\x80\x8F" "a", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_BIDI && f.index == 0);
	CHECK(find("ad\xE2\x80\x8Bmin", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_INVISIBLE);
	CHECK(find("\xEF\xBB\xBF" "bob", UTF8_MASK_REFUSED, &f) && f.cp == 0xFEFF);
	CHECK(find("a\xC2\xAD" "b", UTF8_MASK_REFUSED, &f) && f.cp == 0xAD);
	CHECK(find("a\xE2\x80\xA8" "b", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_SEPARATOR);
	CHECK(find("a\tb", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_CONTROL && f.cp == 9);
	CHECK(find("a\xC2\x85" "b", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_CONTROL && f.cp == 0x85);
	/* Index in characters, not bytes. */
	CHECK(find("\xC3\xA9\xC3\xA9\x7F", UTF8_MASK_REFUSED, &f) && f.index == 2);
	/* Only the classes asked for: the consumer asks for control characters alone. */
	CHECK(!find("evil\xE2\x80\xAEgpj", UTF8_MASK(UTF8_CONTROL), &f));
	CHECK(find("a\x1b[31m", UTF8_MASK(UTF8_CONTROL), &f) && f.cp == 0x1B);
	/* Bytes that are not UTF-8 are found as such. */
	CHECK(find("a\xFF", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_INVALID && f.cp == 0xFF);
	/* A joiner inside a word of a script that needs it stays: Persian ZWNJ, an emoji sequence
	 * (woman ZWJ laptop), Devanagari virama + ZWJ. */
	CHECK(!find("\xD8\xAD\xD8\xB3\xDB\x8C\xD9\x86\xE2\x80\x8C\xD8\xB2\xD8\xA7\xD8\xAF\xD9\x87",
	    UTF8_MASK_REFUSED, &f));
	CHECK(!find("\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x92\xBB", UTF8_MASK_REFUSED, &f));
	CHECK(!find("\xE0\xA4\x95\xE0\xA5\x8D\xE2\x80\x8D\xE0\xA4\xB7", UTF8_MASK_REFUSED, &f));
	/* Elsewhere it only hides: next to ASCII, at either end, two in a row, next to a space. */
	CHECK(find("ad\xE2\x80\x8Dmin", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_JOINER && f.index == 2);
	CHECK(find("\xE2\x80\x8C\xD8\xAD", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_JOINER);
	CHECK(find("\xD8\xAD\xE2\x80\x8C", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_JOINER);
	CHECK(find("\xD8\xAD\xE2\x80\x8C\xE2\x80\x8C\xD8\xB3", UTF8_MASK_REFUSED, &f) &&
	    f.cls == UTF8_JOINER && f.index == 1);
	CHECK(find("\xD8\xAD\xE2\x80\x8D \xD8\xB3", UTF8_MASK_REFUSED, &f) && f.cls == UTF8_JOINER);
	CHECK(find("\xD8\xAD\xE2\x80\x8D\xE2\x80\xAE\xD8\xB3", UTF8_MASK_REFUSED, &f) &&
	    f.cls == UTF8_JOINER);
	/* Every class has a name for the messages. */
	for (int c = UTF8_PLAIN; c <= UTF8_INVALID; c++)
		CHECK(strlen(utf8_class_name((enum utf8_class)c)) > 0);
}

int
main(void)
{
	test_seq();
	test_decode();
	test_quote();
	test_prefix();
	test_classify();
	test_find();
	return unit_report("common_utf8");
}
