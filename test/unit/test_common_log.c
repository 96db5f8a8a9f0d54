/* The log writer: whatever a message holds, one call writes exactly one line, escaped reversibly. */
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "unit.h"

/* What one log call wrote to stderr: stderr is a pipe for the duration of the call. */
static char captured[8192];

static const char *
capture_info(const char *text)
{
	int fds[2], saved = dup(STDERR_FILENO);
	ssize_t n;

	captured[0] = '\0';
	if (saved < 0 || pipe(fds) != 0)
		return captured;
	dup2(fds[1], STDERR_FILENO);
	close(fds[1]);
	log_info("%s", text);
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = read(fds[0], captured, sizeof(captured) - 1);
	close(fds[0]);
	captured[n > 0 ? n : 0] = '\0';
	return captured;
}

/* The text after the line's prefix (time, level, process). */
static const char *
message_of(const char *line)
{
	const char *p = strstr(line, " info unit ");

	return p != NULL ? p + strlen(" info unit ") : "";
}

static size_t
count_char(const char *s, char c)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == c;
	return n;
}

static const char *
escaped(const char *in, size_t len)
{
	static char out[1024];

	log_escape(out, sizeof(out), in, len);
	return out;
}

static void
test_forged_line(void)
{
	const char *line = capture_info(
	    "GET /items/1\n2026-01-01T00:00:00.000Z error user-api FORGED-LINE 404");

	CHECK(count_char(line, '\n') == 1);
	CHECK(line[strlen(line) - 1] == '\n');
	CHECK_STR(message_of(line),
	    "GET /items/1\\n2026-01-01T00:00:00.000Z error user-api FORGED-LINE 404\n");
	line = capture_info("type \"x\r\n2026-01-01T00:00:00.000Z info notification-consumer x\"");
	CHECK(count_char(line, '\n') == 1 && strchr(line, '\r') == NULL);
	CHECK_STR(message_of(line),
	    "type \"x\\r\\n2026-01-01T00:00:00.000Z info notification-consumer x\"\n");
}

static void
test_escapes(void)
{
	/* C0, DEL and the backslash itself, so that the escaping can be undone. */
	CHECK_STR(escaped("a\tb\\n\x1b[31m\x7f\x01", 12), "a\\tb\\\\n\\x1b[31m\\x7f\\x01");
	CHECK_STR(escaped("nul\0end", 7), "nul\\x00end");
	/* C1 controls as UTF-8 (U+0085 NEL, U+009B CSI), and invalid UTF-8: each byte. */
	CHECK_STR(escaped("\xc2\x85|\xc2\x9b|\xc2\xa0", 8), "\\xc2\\x85|\\xc2\\x9b|\xc2\xa0");
	CHECK_STR(escaped("\xff\xc3(\xed\xa0\x80\xe2\x82", 8),
	    "\\xff\\xc3(\\xed\\xa0\\x80\\xe2\\x82");
	/* Line separators and bidirectional overrides; other text stays as it is. */
	CHECK_STR(escaped("\xe2\x80\xa8\xe2\x80\xae\xe2\x81\xa6\xd8\x9c", 11),
	    "\\xe2\\x80\\xa8\\xe2\\x80\\xae\\xe2\\x81\\xa6\\xd8\\x9c");
	CHECK_STR(escaped("Jos\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \"q\"", 18),
	    "Jos\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \"q\"");
}

/* A cut never splits an escape or a character, and the line still ends with its newline. */
static void
test_cut(void)
{
	char out[8], big[3000];
	const char *line;
	size_t len;

	CHECK(log_escape(out, sizeof(out), "ab\n\n", 4) == 6 && strcmp(out, "ab\\n\\n") == 0);
	CHECK(log_escape(out, sizeof(out), "abcd\x01", 5) == 4 && strcmp(out, "abcd") == 0);
	CHECK(log_escape(out, sizeof(out), "abcdef\xc3\xa9", 8) == 6 && strcmp(out, "abcdef") == 0);
	memset(big, '\x01', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	line = capture_info(big);
	len = strlen(line);
	CHECK(len <= 4096 && count_char(line, '\n') == 1 && line[len - 1] == '\n');
	CHECK(len > 4 && strncmp(line + len - 5, "\\x01\n", 5) == 0);
}

int
main(void)
{
	log_init("unit", LOG_LEVEL_INFO);
	test_forged_line();
	test_escapes();
	test_cut();
	return unit_report("common_log");
}
