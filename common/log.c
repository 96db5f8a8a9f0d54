/* Leveled logging to stderr, one line per call, written with a single write(2) so lines never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

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

static void
log_emit(enum log_level level, const char *fmt, va_list ap)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s ", ts.tv_nsec / 1000000,
	    level_names[level], log_proc);
	if (r > 0)
		n += (size_t)r;
	if (n < sizeof(line)) {
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (r > 0)
			n += (size_t)r;
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
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
