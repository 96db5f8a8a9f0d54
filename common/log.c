/* Leveled logging to stderr, one line per call, written with a single write(2) so lines never
 * interleave, and every message escaped so that one call is always exactly one line. */
#include "log.h"

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

static const char *const level_names[] = { "debug", "info", "warn", "error" };

const char *
log_level_name(enum log_level level)
{
	return (size_t)level < sizeof(level_names) / sizeof(level_names[0]) ? level_names[level] : "?";
}

void
log_init(const char *procname, enum log_level level)
{
	log_proc = procname;
	log_threshold = level;
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

size_t
log_escape(char *out, size_t outlen, const char *in, size_t inlen)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0;

	if (outlen == 0)
		return 0;
	for (size_t i = 0; i < inlen;) {
		char esc[16];
		size_t elen = 0, n = utf8_seq(s + i, inlen - i);

		if (n == 1 && (s[i] < 0x20 || s[i] == 0x7F || s[i] == '\\')) {
			esc[elen++] = '\\';
			switch (s[i]) {
			case '\\': esc[elen++] = '\\'; break;
			case '\n': esc[elen++] = 'n'; break;
			case '\r': esc[elen++] = 'r'; break;
			case '\t': esc[elen++] = 't'; break;
			default:
				esc[elen++] = 'x';
				esc[elen++] = hex[s[i] >> 4];
				esc[elen++] = hex[s[i] & 15];
			}
			n = 1;
		} else if (n == 0 || unsafe_char(s + i, n)) {
			/* An invalid byte alone, or each byte of a character kept out: \xNN is always one
			 * byte, so the original bytes can be read back. */
			if (n == 0)
				n = 1;
			for (size_t k = 0; k < n; k++) {
				esc[elen++] = '\\';
				esc[elen++] = 'x';
				esc[elen++] = hex[s[i + k] >> 4];
				esc[elen++] = hex[s[i + k] & 15];
			}
		} else {
			memcpy(esc, s + i, n);
			elen = n;
		}
		/* Cut before a character or an escape that does not fit, never inside one. */
		if (o + elen >= outlen)
			break;
		memcpy(out + o, esc, elen);
		o += elen;
		i += n;
	}
	out[o] = '\0';
	return o;
}

static void
log_emit(enum log_level level, const char *fmt, va_list ap)
{
	/* The message as formatted, then escaped into the line: an escape takes up to 4 bytes a byte,
	 * and a line is cut rather than split. */
	char msg[2048], line[4096];
	struct timespec ts;
	struct tm tm;
	size_t n, mlen = 0;
	int r;

	r = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (r > 0)
		mlen = (size_t)r < sizeof(msg) ? (size_t)r : sizeof(msg) - 1;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s ", ts.tv_nsec / 1000000,
	    level_names[level], log_proc);
	if (r > 0)
		n += (size_t)r;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	/* One byte kept for the newline: log_escape's NUL takes its place. */
	n += log_escape(line + n, sizeof(line) - n - 1, msg, mlen);
	line[n++] = '\n';
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
