/* Settings of a service, read from the environment through one table that also prints --help. */
#ifndef COMMON_CONFIG_H
#define COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum config_type {
	CONFIG_STRING,	/* target: const char ** (points into the environment or the default) */
	/* A string with a default whose empty value means something of its own, which its help
	 * says (user-api's NATS_URL: no nudges); a CONFIG_STRING with a default refuses empty. */
	CONFIG_STRING_OR_EMPTY,
	CONFIG_INT,	/* target: long *, checked against min and max */
	CONFIG_BOOL,	/* target: bool *; true/false/1/0/yes/no/on/off */
	CONFIG_MS,	/* target: long * in milliseconds; "250ms", "2s", "2m", "1h" or bare ms */
	CONFIG_LEVEL,	/* target: enum log_level * */
	CONFIG_LOG_FORMAT,	/* target: enum log_format * */
};

struct config_entry {
	const char *name;	/* environment variable */
	enum config_type type;
	void *target;
	const char *def;	/* default as text, for an unset variable; NULL: none */
	long min, max;		/* CONFIG_INT and CONFIG_MS only */
	const char *help;
};

/* The log's settings, the same in every process's table: LOG_LEVEL and LOG_FORMAT (common/log.h). */
#define LOG_SETTINGS_ENTRIES(level, format)                                                          \
	{ "LOG_LEVEL", CONFIG_LEVEL, &(level), "info", 0, 0, "debug, info, warn or error" },         \
	{ "LOG_FORMAT", CONFIG_LOG_FORMAT, &(format), "text", 0, 0,                                  \
	    "text (a line for people) or json (one JSON object a line: time, level, service, "       \
	    "message and the request, trace, event and user ids it is about)" }

/* Reads every entry from the environment; an unset variable takes its default. A variable set
 * but empty means empty, never the default: a string without a default, or a
 * CONFIG_STRING_OR_EMPTY, is "" (its help says what that means); any other entry (a string with
 * a default, a number, a boolean, a duration, a level) refuses it, as empty is none of its
 * values. On a bad value fills err with a message naming the variable and the value and returns
 * -1. */
int config_load(const struct config_entry *tab, char *err, size_t errlen)
    __attribute__((warn_unused_result));

int config_parse_long(const char *s, long min, long max, long *out) __attribute__((warn_unused_result));
int config_parse_ms(const char *s, long min, long max, long *out) __attribute__((warn_unused_result));
int config_parse_bool(const char *s, bool *out) __attribute__((warn_unused_result));

/* Copies url into out (outlen bytes) with the password of its user information
 * (scheme://user:password@host) shown as ********, so that a connection string can be printed or
 * logged. It errs on the side of hiding: everything from the first ':' after the scheme to the
 * last '@' is masked, so a password holding '@' or '/' does not leak either. A url without '@' is
 * copied as it is. */
void config_url_redact(const char *url, char *out, size_t outlen);

struct cli {
	const char *prog;
	const char *version;
	const char *summary;	/* one paragraph printed at the top of --help */
	const char *commands;	/* extra usage lines for subcommands, or NULL */
	const struct config_entry *settings;
	/* Checks across settings after they are loaded, or NULL: validate(validate_arg, ...) fills
	 * err and returns -1 when they do not fit together. */
	int (*validate)(const void *validate_arg, char *err, size_t errlen);
	const void *validate_arg;
};

/* The start of every main(): --help, --version, --check, then the settings loaded and validated.
 * Returns -1 when the process should go on (with *argi at its first command word), else the exit
 * status for main() to return: 0 after --help, --version or a valid --check, 2 for bad usage or
 * settings (the reason printed on stderr as "prog: reason"). */
int cli_start(const struct cli *c, int argc, char **argv, int *argi) __attribute__((warn_unused_result));

#endif
