/* Unit tests of common/utf8.c: strict sequences, and scrubbing what is not UTF-8 out of a string. */
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
test_scrub(void)
{
	char s[64];

	strcpy(s, "caf\xC3\xA9 \xE2\x82\xAC");
	utf8_scrub(s);
	CHECK_STR(s, "caf\xC3\xA9 \xE2\x82\xAC");
	strcpy(s, "a\xFF" "b");
	utf8_scrub(s);
	CHECK_STR(s, "a?b");
	/* A sequence cut by a buffer: each of its bytes becomes '?'. */
	strcpy(s, "x\xE2\x82");
	utf8_scrub(s);
	CHECK_STR(s, "x??");
	strcpy(s, "\xC0\xAF.");
	utf8_scrub(s);
	CHECK_STR(s, "??.");
	strcpy(s, "");
	utf8_scrub(s);
	CHECK_STR(s, "");
}

int
main(void)
{
	test_seq();
	test_scrub();
	return unit_report("common_utf8");
}
