/* Leveled logging to stderr: one line per event, with level and an optional request or event id.
 *
 * Every message is escaped as a whole when it is written, because a log call cannot tell its own
 * words from the bytes of a request or an event it quotes: a backslash is written as \\, LF, CR
 * and TAB as \n, \r and \t, any other C0 control or DEL as \xNN, and so is each byte of invalid
 * UTF-8, of a C1 control (U+0080..U+009F), of U+2028 and U+2029, and of a bidirectional formatting
 * character (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069). So one call writes exactly
 * one line, and the escaping can be undone: \xNN is always one byte. A line is cut at 4 KiB,
 * never inside an escape or a character. */
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
/* Escapes in (inlen bytes) as log lines are escaped (above) into out, NUL-terminated; stops
 * before a character or an escape that would not fit in outlen bytes. Returns the length written. */
size_t log_escape(char *out, size_t outlen, const char *in, size_t inlen);

/* Copies into out the headline of one of this project's error messages: the text before its
 * first ": " or " at ", which says what could not be done, without the server's address, the
 * user or the driver's words that follow. What a caller sees (readiness checks, 503 details)
 * is the headline; the whole message goes to the log. */
void error_headline(const char *err, char *out, size_t outlen);

/* Logs at error level and exits with status 1. */
noreturn void fatal(const char *fmt, ...) LOG_PRINTF(1, 2);

#endif
