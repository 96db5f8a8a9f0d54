/* Fuzzes the log writer (common/log.c) with text from outside, as the services log it: a request
 * path, a rejection reason, a driver's error message. log.c writes each line to STDERR_FILENO with
 * one write(2); the target points that descriptor at a memory file for each call and reads back
 * what the call wrote. Sanitizer reports go to the real stderr meanwhile.
 *
 * Properties:
 *   log-line   one log call writes exactly one line: it ends with its only newline and holds no
 *              other raw control byte (C0 or DEL), so text from outside cannot forge a second line
 *              or move a terminal's cursor (issue 14, item 1: escaping in the log writer)
 *   json-line  with LOG_FORMAT=json, one log call writes exactly one line that is a JSON object
 *              (jansson parses it, which also proves it valid UTF-8) whose message is a string,
 *              and whose request_id, set from the input, is a string too
 *   headline   error_headline() gives a prefix of its input that fits its buffer
 */
#include <fcntl.h>
#include <jansson.h>
#include <sanitizer/common_interface_defs.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "log.h"

static int capture_fd = -1, stderr_fd = -1;
static char *captured;
static size_t captured_cap = 1 << 20;

int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	capture_fd = memfd_create("fuzz-log", MFD_CLOEXEC);
	stderr_fd = dup(STDERR_FILENO);
	captured = malloc(captured_cap);
	if (capture_fd < 0 || stderr_fd < 0 || captured == NULL) {
		perror("fuzz_log: could not set up the capture of stderr");
		exit(1);
	}
	__sanitizer_set_report_fd((void *)(intptr_t)stderr_fd);
	log_init("fuzz", LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
	return 0;
}

/* Points STDERR_FILENO at an empty memory file. */
static void
capture_begin(void)
{
	if (ftruncate(capture_fd, 0) != 0 || lseek(capture_fd, 0, SEEK_SET) != 0 ||
	    dup2(capture_fd, STDERR_FILENO) < 0)
		abort();
}

/* Gives STDERR_FILENO back and returns what was written meanwhile (*len bytes). */
static const char *
capture_end(size_t *len)
{
	ssize_t n;

	if (dup2(stderr_fd, STDERR_FILENO) < 0)
		abort();
	n = pread(capture_fd, captured, captured_cap, 0);
	*len = n > 0 ? (size_t)n : 0;
	return captured;
}

static void
check_line(const char *out, size_t len)
{
	const char *nl = memchr(out, '\n', len);

	FUZZ_PROPERTY("log-line", len > 0 && nl == out + len - 1,
	    "one log call did not write exactly one line", out, len);
	if (len == 0)
		return;
	FUZZ_PROPERTY("log-line", !fuzz_has_ascii_control(out, len - 1),
	    "a log line holds a raw control byte", out, len);
}

static void
check_json_line(const char *out, size_t len)
{
	json_t *j;
	bool ok;

	check_line(out, len);
	j = json_loadb(out, len, 0, NULL);
	ok = json_is_object(j) && json_is_string(json_object_get(j, "message")) &&
	    (json_object_get(j, "request_id") == NULL ||
	    json_is_string(json_object_get(j, "request_id")));
	json_decref(j);
	FUZZ_PROPERTY("json-line", ok, "a JSON log line that is not a JSON object with its message",
	    out, len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size), head[128];
	const char *out;
	size_t len;

	if (s == NULL)
		return 0;
	/* As user-api logs a request that failed: method, path, error, request id. */
	capture_begin();
	log_warnx("%s %s: %s rid=%s", "GET", s, s, "00000000-0000-0000-0000-000000000000");
	out = capture_end(&len);
	check_line(out, len);

	/* As the consumer logs a poison event's reason, at each level. */
	capture_begin();
	log_error("event %s is poison: %s", "1", s);
	out = capture_end(&len);
	check_line(out, len);
	capture_begin();
	log_info("%s", s);
	out = capture_end(&len);
	check_line(out, len);
	capture_begin();
	log_debug("%s", s);
	out = capture_end(&len);
	check_line(out, len);

	/* The same in the JSON format, with the input as an id of the scope too. */
	log_init("fuzz", LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
	log_scope_set(LOG_ID_REQUEST, s);
	capture_begin();
	log_warnx("%s %s: %s rid=%s", "GET", s, s, s);
	out = capture_end(&len);
	log_scope_clear();
	log_init("fuzz", LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
	check_json_line(out, len);

	/* What readiness checks and 503 answers show of an error message. */
	error_headline(s, head, sizeof(head));
	FUZZ_PROPERTY_STR("headline", strlen(head) < sizeof(head) && strncmp(head, s, strlen(head)) == 0,
	    "a headline that is not a prefix of its message", s);
	free(s);
	return 0;
}
