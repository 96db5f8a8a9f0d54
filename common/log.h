/* Leveled logging to stderr: one line per event, with level and an optional request or event id.
 *
 * Two formats, LOG_FORMAT: text (the default) and json.
 *
 * text: "<time> <level> <process> <message>". Every message is escaped as a whole when it is
 * written, because a log call cannot tell its own words from the bytes of a request or an event it
 * quotes: a backslash is written as \\, LF, CR and TAB as \n, \r and \t, any other C0 control or
 * DEL as \xNN, and so is each byte of invalid UTF-8, of a C1 control (U+0080..U+009F), of U+2028
 * and U+2029, and of a bidirectional formatting character (U+061C, U+200E, U+200F,
 * U+202A..U+202E, U+2066..U+2069). So one call writes exactly one line, and the escaping can be
 * undone: \xNN is always one byte. A line is cut at 4 KiB, never inside an escape or a character.
 *
 * json: one object a line, {"time", "level", "service", "message"} and the ids of the calling
 * thread's scope (log_scope_set(): "request_id", "trace_id", "event_id", "user_id", all strings,
 * each only when set). The message is the text format's before its escaping, as a JSON string: a
 * quote and a backslash escaped, every control character (C0, DEL, C1), U+2028, U+2029 and the
 * bidirectional formatting characters as \uXXXX, so the line holds none of them raw and a parser
 * gives them back; a byte of invalid UTF-8, which a JSON string cannot hold, as the text \xNN (as
 * problem answers show one, utf8_quote()). One call, one line, cut at 4 KiB by shortening the
 * message at a character or an escape, so the line stays a whole object. */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Sets the process name printed on every line (the JSON format's "service"), the threshold and
 * the format. Before the process starts threads. */
void log_init(const char *procname, enum log_level level, enum log_format format);
/* Parses "debug", "info", "warn" or "error"; returns false for anything else. */
bool log_level_parse(const char *s, enum log_level *out);
/* The name log_level_parse takes for level ("info"...). */
const char *log_level_name(enum log_level level);
/* Parses "text" or "json"; returns false for anything else. */
bool log_format_parse(const char *s, enum log_format *out);
/* The name log_format_parse takes for format. */
const char *log_format_name(enum log_format format);

/* The ids a line is about, kept per thread: the JSON format writes each one set as a field of
 * every line the thread logs until it is cleared; the text format leaves them out (its messages
 * carry their ids as text, "rid=..."). Values are copied into fixed buffers of the thread, cut at
 * LOG_ID_MAX bytes: setting one allocates nothing, and with the text format does nothing at all.
 * Whoever sets an id clears it when the work it names is done (or suspended: user-api's loop
 * thread takes turns among many requests). */
enum log_id { LOG_ID_REQUEST, LOG_ID_TRACE, LOG_ID_EVENT, LOG_ID_USER };
#define LOG_ID_COUNT 4
#define LOG_ID_MAX 64

/* value NULL or "" clears the id. */
void log_scope_set(enum log_id id, const char *value);
/* The same for the len bytes at value (a part of a longer text: the trace id of a traceparent). */
void log_scope_set_n(enum log_id id, const char *value, size_t len);
/* The same for a number (a user id), written in decimal. */
void log_scope_set_int(enum log_id id, int64_t value);
/* Clears every id of the calling thread's scope. */
void log_scope_clear(void);
/* Whether the scope is written (LOG_FORMAT=json): lets a caller skip the work of finding an id
 * (parsing a header) that no line would show. */
bool log_scope_enabled(void);

#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))

void log_debug(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_info(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_error(const char *fmt, ...) LOG_PRINTF(1, 2);
/* Escapes in (inlen bytes) as the text format escapes a message (above) into out, NUL-terminated;
 * stops before a character or an escape that would not fit in outlen bytes. Returns the length
 * written. */
size_t log_escape(char *out, size_t outlen, const char *in, size_t inlen);

/* Escapes in (inlen bytes) into out as the contents of a JSON string (without its quotes), as the
 * JSON format writes every string (above), NUL-terminated; stops before a character or an escape
 * that would not fit in outlen bytes. Returns the length written. */
size_t log_json_escape(char *out, size_t outlen, const char *in, size_t inlen);

/* Copies into out the headline of one of this project's error messages: the text before its
 * first ": " or " at ", which says what could not be done, without the server's address, the
 * user or the driver's words that follow. What a caller sees (readiness checks, 503 details)
 * is the headline; the whole message goes to the log. */
void error_headline(const char *err, char *out, size_t outlen);

/* Logs at error level and exits with status 1. */
noreturn void fatal(const char *fmt, ...) LOG_PRINTF(1, 2);

#endif
