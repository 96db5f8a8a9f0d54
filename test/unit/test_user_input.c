/* Unit tests of the user body parser and its validation rules. */
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "user_input.h"
#include "utf8.h"

static struct input_error e;
static struct user_input in;

static int
parse(const char *body)
{
	memset(&e, 0, sizeof(e));
	return user_input_parse(body, strlen(body), &in, &e);
}

static void
expect_error(const char *body, unsigned status, const char *field)
{
	CHECK(parse(body) == -1);
	CHECK(e.status == status);
	CHECK_STR(e.field, field);
}

static void
test_valid(void)
{
	CHECK(parse("{\"name\": \"  John Doe \", \"email\": \" john@example.com\"}") == 0);
	CHECK_STR(in.name, "John Doe");
	CHECK_STR(in.email, "john@example.com");
	/* Tabs and line breaks around a value are trimmed like spaces; inside it they are refused. */
	CHECK(parse("{\"name\": \"\\t Grace Hopper \\n\", \"email\": \"g@navy.mil\\r\\n\"}") == 0);
	CHECK_STR(in.name, "Grace Hopper");
	CHECK_STR(in.email, "g@navy.mil");
	/* SQL-looking text is just text. */
	CHECK(parse("{\"name\": \"Robert'); DROP TABLE users;--\", \"email\": \"r@x.org\"}") == 0);
	CHECK_STR(in.name, "Robert'); DROP TABLE users;--");
	/* Multibyte names count code points, not bytes. */
	{
		char body[1200] = "{\"email\": \"a@b.co\", \"name\": \"";
		for (int i = 0; i < 200; i++)
			strcat(body, "\xC3\xA9");
		strcat(body, "\"}");
		CHECK(parse(body) == 0);
		CHECK(utf8_codepoints(in.name) == 200);
		strcpy(strstr(body, "\"}"), "x\"}");
		expect_error(body, 422, "name");
	}
}

static void
test_malformed(void)
{
	expect_error("", 400, "");
	expect_error("{", 400, "");
	expect_error("{\"name\": \"a\", \"email\": \"a@b.co\"} trailing", 400, "");
	expect_error("[]", 400, "");
	expect_error("\"text\"", 400, "");
	expect_error("42", 400, "");
	expect_error("null", 400, "");
}

static void
test_fields(void)
{
	expect_error("{\"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": \"a\"}", 422, "email");
	expect_error("{\"name\": 1, \"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": null, \"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": \"a\", \"email\": [\"a@b.co\"]}", 422, "email");
	expect_error("{\"name\": \"a\", \"email\": \"a@b.co\", \"admin\": true}", 422, "admin");
	expect_error("{\"name\": \"a\", \"name\": \"b\", \"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": \"a\\u0000b\", \"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": \"a\\u0001b\", \"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": \"a\\nb\", \"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": \"a\\u0085b\", \"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": \"a\", \"email\": \"a@\\tb.co\"}", 422, "email");
	expect_error("{\"name\": \"   \", \"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": \"\", \"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": \"a\xff\", \"email\": \"a@b.co\"}", 422, "name");
	expect_error("{\"name\": \"a\", \"email\": \"a\xc0\xaf@b.co\"}", 422, "email");
}

/* Every byte of s belongs to a valid UTF-8 sequence. */
static int
utf8_ok(const char *s)
{
	size_t len = strlen(s);

	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq((const unsigned char *)s + i, len - i);

		if (n == 0)
			return 0;
		i += n;
	}
	return 1;
}

/* A key longer than the field buffer is cut at a whole character, so the answer that shows it is
 * valid UTF-8 (jansson refuses anything else, and the answer became a 500). */
static void
test_long_keys(void)
{
	char body[512] = "{\"";

	for (int i = 0; i < 40; i++)
		strcat(body, "\xC3\xA9");
	strcat(body, "\": 1, \"name\": \"a\", \"email\": \"a@b.co\"}");
	CHECK(parse(body) == -1);
	CHECK(e.status == 422);
	CHECK(strlen(e.field) == 62);
	CHECK(utf8_ok(e.field));
	CHECK(utf8_ok(e.detail));
	CHECK(strstr(e.detail, "unknown field") != NULL);

	/* The same for a value that is not valid UTF-8 under a long key. */
	strcpy(body, "{\"name\": \"a\", \"email\": \"a@b.co\", \"");
	for (int i = 0; i < 40; i++)
		strcat(body, "\xE2\x82\xAC");
	strcat(body, "\": \"\xff\"}");
	CHECK(parse(body) == -1);
	CHECK(e.status == 422);
	CHECK(strlen(e.field) == 63);
	CHECK(utf8_ok(e.field));
	CHECK(utf8_ok(e.detail));
}

static void
test_details(void)
{
	CHECK(parse("{\"name\": \"a\", \"email\": \"nope\"}") == -1);
	CHECK_STR(e.detail, "\"email\" is not a valid address");
	CHECK(parse("") == -1);
	CHECK_STR(e.detail, "the body is empty; expected a JSON object");
	CHECK_STR(e.field, "");
}

/* A name or an email with a character that reorders or hides text is refused like a control
 * character, naming the field and the character. */
static void
test_deceptive(void)
{
	static const char *const refused[] = {
		"evil\\u202Egpj.exe",	/* RIGHT-TO-LEFT OVERRIDE */
		"a\\u202Ab", "a\\u202Bb", "a\\u202Cb", "a\\u202Db",
		"a\\u2066b", "a\\u2067b", "a\\u2068b", "a\\u2069b",	/* isolates */
		"a\\u200Eb", "a\\u200Fb", "a\\u061Cb",		/* LRM, RLM, ALM */
		"ad\\u200Bmin", "a\\u2060b", "\\uFEFFbob", "a\\u00ADb",	/* ZWSP, WJ, BOM, SHY */
		"ad\\u200Dmin", "bob\\u200C",			/* joiners outside a word */
		"a\\u2028b", "a\\u2029b",			/* line and paragraph separators */
		"a\xE2\x80\xAE" "b",				/* RLO as raw UTF-8, not an escape */
		"a\xC2\x9B" "b",				/* C1 CSI as raw UTF-8 */
	};
	char body[256];

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		snprintf(body, sizeof(body), "{\"name\": \"%s\", \"email\": \"a@b.co\"}", refused[i]);
		expect_error(body, 422, "name");
		CHECK(strstr(e.detail, "\"name\" must not contain") != NULL);
		snprintf(body, sizeof(body), "{\"name\": \"a\", \"email\": \"x%s@b.co\"}", refused[i]);
		expect_error(body, 422, "email");
		CHECK(strstr(e.detail, "\"email\" must not contain") != NULL);
	}
	/* The detail says what and where. */
	expect_error("{\"name\": \"evil\\u202Egpj.exe\", \"email\": \"a@b.co\"}", 422, "name");
	CHECK_STR(e.detail, "\"name\" must not contain bidirectional formatting characters "
	    "(U+202E at character 5)");
	expect_error("{\"name\": \"ad\\u200Bmin\", \"email\": \"a@b.co\"}", 422, "name");
	CHECK_STR(e.detail, "\"name\" must not contain invisible characters (U+200B at character 3)");
	expect_error("{\"name\": \"a\\nb\", \"email\": \"a@b.co\"}", 422, "name");
	CHECK_STR(e.detail, "\"name\" must not contain control characters (U+000A at character 2)");
	/* Joiners where spelling needs them: a Persian surname with ZWNJ, an emoji sequence. */
	CHECK(parse("{\"name\": \"\\u062D\\u0633\\u06CC\\u0646\\u200C\\u0632\\u0627\\u062F\\u0647\", "
	    "\"email\": \"a@b.co\"}") == 0);
	CHECK_STR(in.name, "\xD8\xAD\xD8\xB3\xDB\x8C\xD9\x86\xE2\x80\x8C\xD8\xB2\xD8\xA7\xD8\xAF\xD9\x87");
	CHECK(parse("{\"name\": \"Ann \\uD83D\\uDC69\\u200D\\uD83D\\uDCBB\", \"email\": \"a@b.co\"}") == 0);
	/* Emoji with a variation selector, a no-break space: ordinary. */
	CHECK(parse("{\"name\": \"Ann\\u00A0Lee \\u2764\\uFE0F\", \"email\": \"a@b.co\"}") == 0);
}

/* What the issue reproduced: every detail is valid UTF-8 and shows nothing the client did not
 * send. */
static void
test_details_from_client_bytes(void)
{
	char body[256] = "{\"";

	/* "\é: jansson stops inside é and quotes the byte it choked on. */
	CHECK(parse("\"\\\xC3\xA9") == -1);
	CHECK(e.status == 400);
	CHECK(utf8_ok(e.detail));
	CHECK(strstr(e.detail, "invalid escape") != NULL);
	CHECK(strchr(e.detail, '?') == NULL && strstr(e.detail, "\\x") == NULL);
	/* An unknown key of 62 ASCII characters and é: the field is cut before the é. */
	for (int i = 0; i < 62; i++)
		strcat(body, "k");
	strcat(body, "\xC3\xA9\": 1, \"name\": \"a\", \"email\": \"a@b.co\"}");
	expect_error(body, 422, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk");
	CHECK(utf8_ok(e.detail));
	/* Malformed JSON after a multibyte character, and a long token. */
	CHECK(parse("{\"name\": \xE2\x82\xAC}") == -1 && e.status == 400 && utf8_ok(e.detail));
	CHECK(parse("{\"name\": \"\xE6\x9D\x8E\xE6\x9D\x8E\\q\"}") == -1 && utf8_ok(e.detail));
	CHECK(strstr(e.detail, "\xE6\x9D\x8E") != NULL);
}

static void
test_email(void)
{
	CHECK(email_valid("a@b.co"));
	CHECK(email_valid("first.last+tag@sub.example.org"));
	CHECK(email_valid("x@a-b.c1"));
	CHECK(!email_valid("plain"));
	CHECK(!email_valid("a@b"));
	CHECK(!email_valid("@b.co"));
	CHECK(!email_valid("a@"));
	CHECK(!email_valid("a@@b.co"));
	CHECK(!email_valid("a@b@c.co"));
	CHECK(!email_valid(".a@b.co"));
	CHECK(!email_valid("a.@b.co"));
	CHECK(!email_valid("a..b@b.co"));
	CHECK(!email_valid("a b@b.co"));
	CHECK(!email_valid("a@b..co"));
	CHECK(!email_valid("a@.b.co"));
	CHECK(!email_valid("a@b.co."));
	CHECK(!email_valid("a@-b.co"));
	CHECK(!email_valid("a@b-.co"));
	{
		char local[70], addr[400];

		memset(local, 'x', 65);
		local[65] = '\0';
		snprintf(addr, sizeof(addr), "%s@b.co", local);
		CHECK(!email_valid(addr));
		memset(addr, 0, sizeof(addr));
		strcpy(addr, "a@");
		for (int i = 0; i < 5; i++)
			strcat(addr, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz.");
		strcat(addr, "co");
		CHECK(strlen(addr) > USER_EMAIL_MAX);
		CHECK(!email_valid(addr));
	}
}

/* Reads body both ways, with the plain-pair path and with jansson alone; true when they agree on
 * everything: the outcome, the fields or the error. */
static bool
both_paths_agree(const char *body)
{
	struct user_input a, b;
	struct input_error ea, eb;
	int ra, rb;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&ea, 0, sizeof(ea));
	memset(&eb, 0, sizeof(eb));
	ra = user_input_parse(body, strlen(body), &a, &ea);
	rb = user_input_parse_jansson(body, strlen(body), &b, &eb);
	return ra == rb && memcmp(&a, &b, sizeof(a)) == 0 && memcmp(&ea, &eb, sizeof(ea)) == 0;
}

/* The plain-pair path (user_input.c) takes the common body; every other body, and each near miss
 * of it, goes to jansson with the same outcome. */
static void
test_plain_pair_path(void)
{
	static const char *const bodies[] = {
		"{\"name\":\"Ada\",\"email\":\"ada@example.com\"}",
		" \t\r\n{ \"email\" : \"ada@example.com\" ,\n \"name\" : \" Ada \" } \n",
		"{\"name\": \"\xC3\xA9mile\", \"email\": \"e@example.com\"}",
		"{\"name\": \"\", \"email\": \"e@example.com\"}",
		"{\"name\": \"   \", \"email\": \"e@example.com\"}",
		"{\"name\": \"a\", \"email\": \"not-an-address\"}",
		"{\"name\": \"a\u202Eb\", \"email\": \"e@example.com\"}",
		"{\"name\": \"a\xE2\x80\xAE" "b\", \"email\": \"e@example.com\"}",
		"{\"name\": \"a\x7F\", \"email\": \"e@example.com\"}",
		"{\"name\": \"a\\nb\", \"email\": \"e@example.com\"}",
		"{\"name\": \"a\nb\", \"email\": \"e@example.com\"}",
		"{\"name\": \"a\\u0000b\", \"email\": \"e@example.com\"}",
		"{\"name\": \"a\", \"name\": \"b\", \"email\": \"e@example.com\"}",
		"{\"name\": \"a\", \"email\": \"e@example.com\", \"email\": \"f@example.com\"}",
		"{\"name\": \"a\", \"email\": \"e@example.com\", \"admin\": \"yes\"}",
		"{\"name\": \"a\"}",
		"{\"email\": \"e@example.com\"}",
		"{}",
		"{\"name\": 1, \"email\": \"e@example.com\"}",
		"{\"name\": \"a\", \"email\": null}",
		"{\"name\": \"a\", \"email\": \"e@example.com\",}",
		"{\"name\": \"a\" \"email\": \"e@example.com\"}",
		"{\"name\" \"a\", \"email\": \"e@example.com\"}",
		"{\"name\": \"a\", \"email\": \"e@example.com\"",
		"{\"name\": \"a\", \"email\": \"e@example.com",
		"{\"name\": \"a\", \"email\": \"e@example.com\"} x",
		"{\"name\": \"a\", \"email\": \"e@example.com\"}{}",
		"\xEF\xBB\xBF{\"name\": \"a\", \"email\": \"e@example.com\"}",
		"{\"nam\\u0065\": \"a\", \"email\": \"e@example.com\"}",
		"{\"Name\": \"a\", \"email\": \"e@example.com\"}",
		"{\"name\": \"a\", \"email\": \"e@example.com\"}\x0B",
		"[{\"name\": \"a\", \"email\": \"e@example.com\"}]",
	};
	char body[1400];

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		size_t n = strlen(bodies[i]);

		CHECK(both_paths_agree(bodies[i]));
		/* Every prefix of it too: bodies cut anywhere. */
		for (size_t k = 0; k < n; k++) {
			memcpy(body, bodies[i], k);
			body[k] = '\0';
			CHECK(both_paths_agree(body));
		}
	}
	/* Lengths at and past the limits. */
	snprintf(body, sizeof(body), "{\"name\": \"%0200d\", \"email\": \"e@example.com\"}", 0);
	CHECK(both_paths_agree(body));
	snprintf(body, sizeof(body), "{\"name\": \"%0201d\", \"email\": \"e@example.com\"}", 0);
	CHECK(both_paths_agree(body));
	snprintf(body, sizeof(body), "{\"name\": \"a\", \"email\": \"e@%0300d.co\"}", 0);
	CHECK(both_paths_agree(body));
}

int
main(void)
{
	test_valid();
	test_malformed();
	test_fields();
	test_email();
	test_long_keys();
	test_details();
	test_deceptive();
	test_details_from_client_bytes();
	test_plain_pair_path();
	return unit_report("user_input");
}
