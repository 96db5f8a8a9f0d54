/* Leveled logging to stderr, one line per call, written with a single write(2) so lines never
 * interleave, and every message escaped so that one call is always exactly one line: as text, or
 * as a JSON object with the ids of the thread's scope. */
#include "log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "utf8.h"

static const char *log_proc = "?";
static enum log_level log_threshold = LOG_LEVEL_INFO;
static enum log_format log_fmt = LOG_FORMAT_TEXT;

static const char *const level_names[] = { "debug", "info", "warn", "error" };
static const char *const format_names[] = { "text", "json" };
/* The JSON format's fields of the scope, by enum log_id: each with its comma, name and colon. */
static const char *const id_fields[LOG_ID_COUNT] = { ",\"request_id\":\"", ",\"trace_id\":\"",
	",\"event_id\":\"", ",\"user_id\":\"" };

/* The calling thread's ids: an empty string is an id not set. */
static _Thread_local char scope[LOG_ID_COUNT][LOG_ID_MAX + 1];

const char *
log_level_name(enum log_level level)
{
	return (size_t)level < sizeof(level_names) / sizeof(level_names[0]) ? level_names[level] : "?";
}

void
log_init(const char *procname, enum log_level level, enum log_format format)
{
	log_proc = procname;
	log_threshold = level;
	log_fmt = format;
}

bool
log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	return false;
}

const char *
log_format_name(enum log_format format)
{
	return (size_t)format < sizeof(format_names) / sizeof(format_names[0]) ? format_names[format] :
	    "?";
}

bool
log_format_parse(const char *s, enum log_format *out)
{
	for (size_t i = 0; i < sizeof(format_names) / sizeof(format_names[0]); i++) {
		if (strcasecmp(s, format_names[i]) == 0) {
			*out = (enum log_format)i;
			return true;
		}
	}
	return false;
}

bool
log_scope_enabled(void)
{
	return log_fmt == LOG_FORMAT_JSON;
}

void
log_scope_set_n(enum log_id id, const char *value, size_t len)
{
	if (log_fmt != LOG_FORMAT_JSON || (size_t)id >= LOG_ID_COUNT)
		return;
	if (value == NULL)
		len = 0;
	if (len > LOG_ID_MAX)
		len = LOG_ID_MAX;
	if (len > 0)
		memcpy(scope[id], value, len);
	scope[id][len] = '\0';
}

void
log_scope_set(enum log_id id, const char *value)
{
	if (log_fmt != LOG_FORMAT_JSON)
		return;
	log_scope_set_n(id, value, value != NULL ? strnlen(value, LOG_ID_MAX) : 0);
}

void
log_scope_set_int(enum log_id id, int64_t value)
{
	if (log_fmt != LOG_FORMAT_JSON || (size_t)id >= LOG_ID_COUNT)
		return;
	snprintf(scope[id], sizeof(scope[id]), "%" PRId64, value);
}

void
log_scope_clear(void)
{
	if (log_fmt != LOG_FORMAT_JSON)
		return;
	for (size_t i = 0; i < LOG_ID_COUNT; i++)
		scope[i][0] = '\0';
}

static bool
log_enabled(enum log_level level)
{
	return level >= log_threshold;
}

/* Whether the valid UTF-8 sequence at s (n bytes) is a character that must not reach a log line
 * as it is, by common/utf8.h's one classification: a control (C0 and DEL are escaped before this;
 * C1 here), a line or paragraph separator (a line break to some readers of logs), or a
 * bidirectional formatting character, which reorders how a line is displayed. */
static bool
unsafe_char(const unsigned char *s, size_t n)
{
	uint32_t cp;
	enum utf8_class cls;

	if (utf8_decode(s, n, &cp) != n)
		return true;
	cls = utf8_classify(cp);
	return cls == UTF8_CONTROL || cls == UTF8_SEPARATOR || cls == UTF8_BIDI;
}

static const char hex_digits[] = "0123456789abcdef";

/* The text one character stands for in a format: writes it to esc (at most 12 bytes), sets *n to
 * the bytes of s it stands for (at least 1), and returns its length. left > 0. */
typedef size_t (*escape_one_fn)(const unsigned char *s, size_t left, char *esc, size_t *n);

/* The text format's: \\, \n, \r and \t for themselves; other control bytes, invalid bytes and
 * the characters unsafe_char() keeps out as \xNN, one a byte, so the original bytes can be read
 * back. */
static size_t
text_escape_one(const unsigned char *s, size_t left, char *esc, size_t *n)
{
	size_t elen = 0;

	*n = utf8_seq(s, left);
	if (*n == 1 && (s[0] < 0x20 || s[0] == 0x7F || s[0] == '\\')) {
		esc[elen++] = '\\';
		switch (s[0]) {
		case '\\': esc[elen++] = '\\'; break;
		case '\n': esc[elen++] = 'n'; break;
		case '\r': esc[elen++] = 'r'; break;
		case '\t': esc[elen++] = 't'; break;
		default:
			esc[elen++] = 'x';
			esc[elen++] = hex_digits[s[0] >> 4];
			esc[elen++] = hex_digits[s[0] & 15];
		}
		return elen;
	}
	if (*n == 0 || unsafe_char(s, *n)) {
		/* An invalid byte alone, or each byte of a character kept out. */
		if (*n == 0)
			*n = 1;
		for (size_t k = 0; k < *n; k++) {
			esc[elen++] = '\\';
			esc[elen++] = 'x';
			esc[elen++] = hex_digits[s[k] >> 4];
			esc[elen++] = hex_digits[s[k] & 15];
		}
		return elen;
	}
	memcpy(esc, s, *n);
	return *n;
}

/* The JSON format's: a valid JSON string's escapes, invalid bytes as the text \xNN. */
static size_t
json_escape_one(const unsigned char *s, size_t left, char *esc, size_t *n)
{
	size_t elen = 0;
	uint32_t cp;

	*n = utf8_seq(s, left);
	if (*n == 1 && (s[0] < 0x20 || s[0] == 0x7F || s[0] == '"' || s[0] == '\\')) {
		esc[elen++] = '\\';
		switch (s[0]) {
		case '"': esc[elen++] = '"'; break;
		case '\\': esc[elen++] = '\\'; break;
		case '\n': esc[elen++] = 'n'; break;
		case '\r': esc[elen++] = 'r'; break;
		case '\t': esc[elen++] = 't'; break;
		default:
			memcpy(esc + elen, "u00", 3);
			elen += 3;
			esc[elen++] = hex_digits[s[0] >> 4];
			esc[elen++] = hex_digits[s[0] & 15];
		}
		return elen;
	}
	if (*n == 0) {
		/* A JSON string holds Unicode only: the byte as the text \xNN, its backslash
		 * escaped. */
		memcpy(esc, "\\\\x", 3);
		elen = 3;
		esc[elen++] = hex_digits[s[0] >> 4];
		esc[elen++] = hex_digits[s[0] & 15];
		*n = 1;
		return elen;
	}
	if (unsafe_char(s, *n)) {
		/* C1, U+2028, U+2029 and the bidirectional formatting characters are all in the
		 * Basic Multilingual Plane: one \uXXXX each, which a parser turns back into the
		 * character. */
		(void)utf8_decode(s, *n, &cp);
		esc[elen++] = '\\';
		esc[elen++] = 'u';
		for (int shift = 12; shift >= 0; shift -= 4)
			esc[elen++] = hex_digits[(cp >> shift) & 15];
		return elen;
	}
	memcpy(esc, s, *n);
	return *n;
}

/* Escapes in with one format's escape_one(), cutting before a character or an escape that does
 * not fit, never inside one. */
static size_t
escape_with(char *out, size_t outlen, const char *in, size_t inlen, escape_one_fn one)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0;

	if (outlen == 0)
		return 0;
	for (size_t i = 0; i < inlen;) {
		char esc[16];
		size_t n, elen = one(s + i, inlen - i, esc, &n);

		if (o + elen >= outlen)
			break;
		memcpy(out + o, esc, elen);
		o += elen;
		i += n;
	}
	out[o] = '\0';
	return o;
}

size_t
log_escape(char *out, size_t outlen, const char *in, size_t inlen)
{
	return escape_with(out, outlen, in, inlen, text_escape_one);
}

size_t
log_json_escape(char *out, size_t outlen, const char *in, size_t inlen)
{
	return escape_with(out, outlen, in, inlen, json_escape_one);
}

/* Writes the line's time, "2026-11-30T15:42:35.123Z", at out (at least 32 bytes); returns its
 * length. */
static size_t
format_time(char *out, size_t outlen)
{
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(out + n, outlen - n, ".%03ldZ", ts.tv_nsec / 1000000);
	return r > 0 ? n + (size_t)r : n;
}

/* The text format: "<time> <level> <process> <message>", the message escaped (log_escape()). One
 * byte is kept for the newline: log_escape's NUL takes its place. Returns the line's length. */
static size_t
format_text(char *line, size_t size, enum log_level level, const char *msg, size_t mlen)
{
	size_t n = format_time(line, size);
	int r = snprintf(line + n, size - n, " %s %s ", level_names[level], log_proc);

	if (r > 0)
		n += (size_t)r;
	if (n > size - 2)
		n = size - 2;
	n += log_escape(line + n, size - n - 1, msg, mlen);
	line[n++] = '\n';
	return n;
}

/* Appends the len bytes at s to line (size bytes, n used) as far as they fit; returns the new n. */
static size_t
append(char *line, size_t size, size_t n, const char *s, size_t len)
{
	if (len > size - n)
		len = size - n;
	memcpy(line + n, s, len);
	return n + len;
}

/* The JSON format: {"time":...,"level":...,"service":...,"message":...} and the scope's ids. The
 * ids go into tail first, so that the message is the one part cut when the line would pass size
 * bytes, at a character or an escape (log_json_escape()), and the object is always closed.
 * Returns the line's length. */
static size_t
format_json(char *line, size_t size, enum log_level level, const char *msg, size_t mlen)
{
	/* Each id is at most LOG_ID_MAX bytes, and an escape takes at most 6 bytes a byte. */
	char tail[LOG_ID_COUNT * (24 + 6 * LOG_ID_MAX) + 4];
	size_t n = 0, t = 0;

	t = append(tail, sizeof(tail), t, "\"", 1);
	for (size_t i = 0; i < LOG_ID_COUNT; i++) {
		if (scope[i][0] == '\0')
			continue;
		t = append(tail, sizeof(tail), t, id_fields[i], strlen(id_fields[i]));
		t += log_json_escape(tail + t, sizeof(tail) - t - 3, scope[i], strlen(scope[i]));
		t = append(tail, sizeof(tail), t, "\"", 1);
	}
	t = append(tail, sizeof(tail), t, "}\n", 2);
	n = append(line, size, n, "{\"time\":\"", 9);
	n += format_time(line + n, size - n);
	n = append(line, size, n, "\",\"level\":\"", 11);
	n = append(line, size, n, level_names[level], strlen(level_names[level]));
	n = append(line, size, n, "\",\"service\":\"", 13);
	n += log_json_escape(line + n, size - n - t, log_proc, strlen(log_proc));
	n = append(line, size, n, "\",\"message\":\"", 13);
	/* What is left before the tail, and one byte more for log_json_escape's NUL, which the
	 * tail's first byte then takes the place of. */
	n += log_json_escape(line + n, size - n - t + 1, msg, mlen);
	return append(line, size, n, tail, t);
}

static void
log_emit(enum log_level level, const char *fmt, va_list ap)
{
	/* The message as formatted, then escaped into the line: an escape takes up to 6 bytes a byte,
	 * and a line is cut rather than split. */
	char msg[2048], line[4096];
	size_t n, mlen = 0;
	int r;

	r = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (r > 0)
		mlen = (size_t)r < sizeof(msg) ? (size_t)r : sizeof(msg) - 1;
	if (log_fmt == LOG_FORMAT_JSON)
		n = format_json(line, sizeof(line), level, msg, mlen);
	else
		n = format_text(line, sizeof(line), level, msg, mlen);
	/* A short write to stderr has nowhere to be reported. */
	(void)!write(STDERR_FILENO, line, n);
}

#define LOG_BODY(level)                         \
	do {                                        \
		va_list ap;                             \
		if (!log_enabled(level))                \
			return;                             \
		va_start(ap, fmt);                      \
		log_emit(level, fmt, ap);               \
		va_end(ap);                             \
	} while (0)

void
log_debug(const char *fmt, ...)
{
	LOG_BODY(LOG_LEVEL_DEBUG);
}

void
log_info(const char *fmt, ...)
{
	LOG_BODY(LOG_LEVEL_INFO);
}

void
log_warnx(const char *fmt, ...)
{
	LOG_BODY(LOG_LEVEL_WARN);
}

void
log_error(const char *fmt, ...)
{
	LOG_BODY(LOG_LEVEL_ERROR);
}

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

void
error_headline(const char *err, char *out, size_t outlen)
{
	const char *colon = strstr(err, ": "), *at = strstr(err, " at ");
	const char *end = colon == NULL || (at != NULL && at < colon) ? at : colon;
	int n = end != NULL ? (int)(end - err) : (int)strlen(err);

	snprintf(out, outlen, "%.*s", n, err);
}
