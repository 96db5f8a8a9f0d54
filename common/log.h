/* Leveled logging to stderr: one line per event, with level and an optional request or event id. */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdnoreturn.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* Sets the process name printed on every line and the threshold. */
void log_init(const char *procname, enum log_level level);
/* Parses "debug", "info", "warn" or "error"; returns false for anything else. */
bool log_level_parse(const char *s, enum log_level *out);
/* The name log_level_parse takes for level ("info"...). */
const char *log_level_name(enum log_level level);

#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))

void log_debug(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_info(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_error(const char *fmt, ...) LOG_PRINTF(1, 2);
/* Copies into out the headline of one of this project's error messages: the text before its
 * first ": " or " at ", which says what could not be done, without the server's address, the
 * user or the driver's words that follow. What a caller sees (readiness checks, 503 details)
 * is the headline; the whole message goes to the log. */
void error_headline(const char *err, char *out, size_t outlen);

/* Logs at error level and exits with status 1. */
noreturn void fatal(const char *fmt, ...) LOG_PRINTF(1, 2);

#endif
