/* The log writer: whatever a message holds, one call writes exactly one line, escaped reversibly;
 * in the JSON format a valid JSON object with the ids of the thread's scope. */
#include <jansson.h>
#include <pthread.h>
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

static const char *
json_escaped(const char *in, size_t len)
{
	static char out[1024];

	log_json_escape(out, sizeof(out), in, len);
	return out;
}

/* Every string of a JSON line: quotes, backslashes and control characters escaped as JSON has
 * them, the characters the text format keeps out as \uXXXX, invalid UTF-8 as the text \xNN. */
static void
test_json_escapes(void)
{
	char out[8];

	CHECK_STR(json_escaped("say \"hi\" C:\\dir", 15), "say \\\"hi\\\" C:\\\\dir");
	CHECK_STR(json_escaped("a\nb\rc\td", 7), "a\\nb\\rc\\td");
	CHECK_STR(json_escaped("\x01\x1b[31m\x7f\x08\x0c", 9), "\\u0001\\u001b[31m\\u007f\\u0008\\u000c");
	CHECK_STR(json_escaped("nul\0end", 7), "nul\\u0000end");
	/* C1 (NEL, CSI), line and paragraph separators, bidirectional overrides: \uXXXX. */
	CHECK_STR(json_escaped("\xc2\x85\xc2\x9b\xe2\x80\xa8\xe2\x80\xa9\xe2\x80\xae\xd8\x9c", 15),
	    "\\u0085\\u009b\\u2028\\u2029\\u202e\\u061c");
	/* Invalid UTF-8, byte by byte: a lone continuation, a cut sequence, a surrogate, 0xff. */
	CHECK_STR(json_escaped("\xff\xc3(\xed\xa0\x80\xe2\x82", 8),
	    "\\\\xff\\\\xc3(\\\\xed\\\\xa0\\\\x80\\\\xe2\\\\x82");
	/* Other text as it is, a no-break space included. */
	CHECK_STR(json_escaped("Jos\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\xa0", 17),
	    "Jos\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\xa0");
	/* A cut never splits an escape or a character. */
	CHECK(log_json_escape(out, sizeof(out), "ab\x01", 3) == 2 && strcmp(out, "ab") == 0);
	CHECK(log_json_escape(out, sizeof(out), "abcdef\"", 7) == 6 && strcmp(out, "abcdef") == 0);
	CHECK(log_json_escape(out, sizeof(out), "abcdef\xe2\x82\xac", 9) == 6 &&
	    strcmp(out, "abcdef") == 0);
	CHECK(log_json_escape(out, sizeof(out), "abcd\xff", 5) == 4 && strcmp(out, "abcd") == 0);
}

/* Parses a captured line: exactly one, ending with its newline, a JSON object with the fields
 * every line has. Returns a new reference (the caller json_decref()s it), or NULL. */
static json_t *
parse_line(const char *line, const char *level)
{
	json_error_t e;
	json_t *j;
	size_t len = strlen(line);

	CHECK(len > 0 && count_char(line, '\n') == 1 && line[len - 1] == '\n');
	CHECK(len <= 4096);
	j = json_loads(line, 0, &e);
	if (j == NULL) {
		fprintf(stderr, "not JSON (%s): %s", e.text, line);
		CHECK(j != NULL);
		return NULL;
	}
	CHECK(json_is_object(j));
	CHECK(json_is_string(json_object_get(j, "time")) &&
	    strlen(json_string_value(json_object_get(j, "time"))) == 24);
	CHECK_STR(json_string_value(json_object_get(j, "level")), level);
	CHECK_STR(json_string_value(json_object_get(j, "service")), "unit");
	CHECK(json_is_string(json_object_get(j, "message")));
	return j;
}

static const char *
field(json_t *j, const char *name)
{
	return json_string_value(json_object_get(j, name));
}

static void
test_json_line(void)
{
	static const char forged[] =
	    "GET /users/1\n{\"time\":\"2026-01-01T00:00:00.000Z\",\"level\":\"error\"} \\ \x1b[31m";
	json_t *j;

	log_init("unit", LOG_LEVEL_INFO, LOG_FORMAT_JSON);
	j = parse_line(capture_info(forged), "info");
	CHECK_STR(field(j, "message"), forged);
	CHECK(json_object_size(j) == 4);	/* no ids in scope: none written */
	json_decref(j);
	/* Invalid UTF-8 reaches the line as the text \xNN, the line stays valid JSON. */
	j = parse_line(capture_info("bad \xff\xfe byte"), "info");
	CHECK_STR(field(j, "message"), "bad \\xff\\xfe byte");
	json_decref(j);
	j = parse_line(capture_info("\xe2\x80\xa8 line\xc2\x85 sep \xe2\x80\xae"), "info");
	CHECK_STR(field(j, "message"), "\xe2\x80\xa8 line\xc2\x85 sep \xe2\x80\xae");
	CHECK(strstr(captured, "\xe2\x80\xa8") == NULL && strstr(captured, "\\u2028") != NULL);
	json_decref(j);
	log_init("unit", LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
}

static void *
log_from_another_thread(void *arg)
{
	(void)arg;
	capture_info("from another thread");
	return NULL;
}

/* The ids of the thread's scope as fields, escaped like the rest; cleared, gone; other threads
 * have their own; the text format leaves its lines as they were. */
static void
test_json_scope(void)
{
	static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	pthread_t t;
	json_t *j;

	log_init("unit", LOG_LEVEL_INFO, LOG_FORMAT_JSON);
	CHECK(log_scope_enabled());
	log_scope_set(LOG_ID_REQUEST, "req-1");
	log_scope_set_n(LOG_ID_TRACE, tp + 3, 32);
	log_scope_set(LOG_ID_EVENT, "ev\"1\n");
	log_scope_set_int(LOG_ID_USER, 9007199254740993LL);
	j = parse_line(capture_info("applied rid=req-1"), "info");
	CHECK_STR(field(j, "message"), "applied rid=req-1");
	CHECK_STR(field(j, "request_id"), "req-1");
	CHECK_STR(field(j, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
	CHECK_STR(field(j, "event_id"), "ev\"1\n");
	CHECK_STR(field(j, "user_id"), "9007199254740993");	/* a string: exact past 2^53 */
	json_decref(j);
	/* Another thread's lines carry its own scope, empty here. */
	CHECK(pthread_create(&t, NULL, log_from_another_thread, NULL) == 0 && pthread_join(t, NULL) == 0);
	j = parse_line(captured, "info");
	CHECK(json_object_get(j, "request_id") == NULL && json_object_size(j) == 4);
	json_decref(j);
	/* An id longer than LOG_ID_MAX is cut; NULL clears one; log_scope_clear() all. */
	log_scope_set(LOG_ID_REQUEST, "0123456789012345678901234567890123456789012345678901234567890123"
	    "456789");
	log_scope_set(LOG_ID_EVENT, NULL);
	j = parse_line(capture_info("x"), "info");
	CHECK(field(j, "request_id") != NULL && strlen(field(j, "request_id")) == LOG_ID_MAX);
	CHECK(json_object_get(j, "event_id") == NULL);
	json_decref(j);
	log_scope_clear();
	j = parse_line(capture_info("x"), "info");
	CHECK(json_object_size(j) == 4);
	json_decref(j);
	/* The text format: nothing kept, the line as it always was. */
	log_init("unit", LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	CHECK(!log_scope_enabled());
	log_scope_set(LOG_ID_REQUEST, "req-2");
	CHECK_STR(message_of(capture_info("GET /users 200 rid=req-2")), "GET /users 200 rid=req-2\n");
	CHECK(strstr(captured, "request_id") == NULL);
}

/* At 4 KiB the message is cut at a character or an escape, and the line is still one whole
 * object with its ids. */
static void
test_json_cut(void)
{
	char big[2048];
	const char *msg;
	size_t k = 0, len;
	json_t *j;

	/* 500 control bytes, 6 bytes each escaped, then 2-byte characters past the line's end. */
	memset(big, '\x01', 500);
	for (size_t i = 500; i + 2 < sizeof(big); i += 2)
		memcpy(big + i, "\xc3\xa9", 2);
	big[500 + (sizeof(big) - 503) / 2 * 2] = '\0';
	log_init("unit", LOG_LEVEL_INFO, LOG_FORMAT_JSON);
	log_scope_set(LOG_ID_REQUEST, "req-cut");
	j = parse_line(capture_info(big), "info");
	CHECK(strlen(captured) > 4000);
	CHECK_STR(field(j, "request_id"), "req-cut");
	msg = field(j, "message");
	len = msg != NULL ? strlen(msg) : 0;
	CHECK(len > 500 && len < strlen(big) && strncmp(msg, big, len) == 0);
	for (size_t i = 500; i + 1 < len; i += 2)
		k += memcmp(msg + i, "\xc3\xa9", 2) == 0;
	CHECK(len % 2 == 0 && k == (len - 500) / 2);	/* whole characters only */
	json_decref(j);
	/* Control bytes only: cut between two escapes. */
	memset(big, '\x01', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	j = parse_line(capture_info(big), "info");
	msg = field(j, "message");
	CHECK(msg != NULL && strlen(msg) > 500 && strspn(msg, "\x01") == strlen(msg));
	json_decref(j);
	log_scope_clear();
	log_init("unit", LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
}

static void
test_format_names(void)
{
	enum log_format f = LOG_FORMAT_TEXT;

	CHECK(log_format_parse("json", &f) && f == LOG_FORMAT_JSON);
	CHECK(log_format_parse("TEXT", &f) && f == LOG_FORMAT_TEXT);
	CHECK(!log_format_parse("logfmt", &f) && !log_format_parse("", &f));
	CHECK_STR(log_format_name(LOG_FORMAT_JSON), "json");
}

int
main(void)
{
	log_init("unit", LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
	test_forged_line();
	test_escapes();
	test_cut();
	test_json_escapes();
	test_json_line();
	test_json_scope();
	test_json_cut();
	test_format_names();
	return unit_report("common_log");
}
