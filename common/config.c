/* Table-driven configuration from the environment; the same table prints --help. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

int
config_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int
config_parse_ms(const char *s, long min, long max, long *out)
{
	char *end;
	long v, mult = 1;

	if (s == NULL || *s == '\0' || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	/* strtol() skips leading spaces, so " -5m" passed the sign check above; negative, it would
	 * also slip under the overflow check below. */
	if (errno != 0 || end == s || v < 0)
		return -1;
	if (*end == '\0' || strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mult = 3600 * 1000;
	else
		return -1;
	if (v > LONG_MAX / mult)
		return -1;
	v *= mult;
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int
config_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

void
config_url_redact(const char *url, char *out, size_t outlen)
{
	const char *rest = strstr(url, "://"), *at, *colon;

	if (rest == NULL || (at = strrchr(rest + 3, '@')) == NULL) {
		snprintf(out, outlen, "%s", url);
		return;
	}
	rest += 3;
	colon = memchr(rest, ':', (size_t)(at - rest));
	if (colon == NULL) {
		snprintf(out, outlen, "%s", url);
		return;
	}
	snprintf(out, outlen, "%.*s********%s", (int)(colon + 1 - url), url, at);
}

int
config_load(const struct config_entry *tab, char *err, size_t errlen)
{
	for (const struct config_entry *e = tab; e->name != NULL; e++) {
		const char *v = getenv(e->name);

		if (v == NULL) {
			v = e->def;
		} else if (*v == '\0' && !(e->type == CONFIG_STRING_OR_EMPTY ||
		    (e->type == CONFIG_STRING && e->def == NULL))) {
			if (e->def != NULL)
				snprintf(err, errlen, "%s is set but empty: unset it for its default \"%s\", "
				    "or give a value", e->name, e->def);
			else
				snprintf(err, errlen, "%s is set but empty: give a value", e->name);
			return -1;
		}
		switch (e->type) {
		case CONFIG_STRING:
		case CONFIG_STRING_OR_EMPTY:
			*(const char **)e->target = v != NULL ? v : "";
			break;
		case CONFIG_INT:
			if (config_parse_long(v, e->min, e->max, (long *)e->target) != 0) {
				snprintf(err, errlen, "invalid %s \"%s\": expected a whole number from %ld to %ld",
				    e->name, v ? v : "", e->min, e->max);
				return -1;
			}
			break;
		case CONFIG_MS:
			if (config_parse_ms(v, e->min, e->max, (long *)e->target) != 0) {
				snprintf(err, errlen, "invalid %s \"%s\": expected a duration such as 250ms, 2s or 2m, "
				    "from %ldms to %ldms", e->name, v ? v : "", e->min, e->max);
				return -1;
			}
			break;
		case CONFIG_BOOL:
			if (v == NULL || config_parse_bool(v, (bool *)e->target) != 0) {
				snprintf(err, errlen, "invalid %s \"%s\": expected true or false", e->name, v ? v : "");
				return -1;
			}
			break;
		case CONFIG_LEVEL:
			if (v == NULL || !log_level_parse(v, (enum log_level *)e->target)) {
				snprintf(err, errlen, "invalid %s \"%s\": expected debug, info, warn or error",
				    e->name, v ? v : "");
				return -1;
			}
			break;
		case CONFIG_LOG_FORMAT:
			if (v == NULL || !log_format_parse(v, (enum log_format *)e->target)) {
				snprintf(err, errlen, "invalid %s \"%s\": expected text or json", e->name,
				    v ? v : "");
				return -1;
			}
			break;
		}
	}
	return 0;
}

enum cli_action { CLI_RUN, CLI_EXIT_OK, CLI_EXIT_USAGE, CLI_CHECK };

/* Prints the settings table: name, help line and default. The names make one column as wide as
 * the longest of this table, so that no name runs into its help text. */
static void
config_usage(FILE *out, const struct config_entry *tab)
{
	int width = 0;

	for (const struct config_entry *e = tab; e->name != NULL; e++)
		if ((int)strlen(e->name) > width)
			width = (int)strlen(e->name);
	fprintf(out, "Environment (default in brackets, for a variable that is unset; a variable set "
	    "but empty\nmeans empty: taken where the default is empty or the help says what empty "
	    "means,\nrefused elsewhere):\n");
	for (const struct config_entry *e = tab; e->name != NULL; e++)
		fprintf(out, "  %-*s  %s [%s]\n", width, e->name, e->help, e->def ? e->def : "");
}

/* Prints every setting with its effective value; values of names containing PASSWORD are masked
 * (not those ending in _FILE: a path, which says where the secret is, not what it is), and so is
 * the password of a connection string (MONGODB_URI, NATS_URL). */
static void
config_dump(FILE *out, const struct config_entry *tab)
{
	for (const struct config_entry *e = tab; e->name != NULL; e++) {
		size_t nlen = strlen(e->name);

		if (strstr(e->name, "PASSWORD") != NULL &&
		    (nlen < 5 || strcmp(e->name + nlen - 5, "_FILE") != 0)) {
			fprintf(out, "%s=********\n", e->name);
			continue;
		}
		switch (e->type) {
		case CONFIG_STRING:
		case CONFIG_STRING_OR_EMPTY: {
			const char *v = *(const char **)e->target;
			size_t len = strlen(v) + 9;	/* the mask may be longer than the password */
			char *shown = malloc(len);

			if (shown == NULL) {
				fprintf(out, "%s=(out of memory)\n", e->name);
				break;
			}
			config_url_redact(v, shown, len);
			fprintf(out, "%s=%s\n", e->name, shown);
			free(shown);
			break;
		}
		case CONFIG_INT:
			fprintf(out, "%s=%ld\n", e->name, *(long *)e->target);
			break;
		case CONFIG_MS:
			fprintf(out, "%s=%ldms\n", e->name, *(long *)e->target);
			break;
		case CONFIG_BOOL:
			fprintf(out, "%s=%s\n", e->name, *(bool *)e->target ? "true" : "false");
			break;
		case CONFIG_LEVEL:
			fprintf(out, "%s=%s\n", e->name, log_level_name(*(enum log_level *)e->target));
			break;
		case CONFIG_LOG_FORMAT:
			fprintf(out, "%s=%s\n", e->name, log_format_name(*(enum log_format *)e->target));
			break;
		}
	}
}

/* Handles --help, --version and --check (alias -n) in argv[1]; everything else is left to the
 * caller from *argi on. Prints help or version itself. */
static enum cli_action
cli_parse(const struct cli *c, int argc, char **argv, int *argi)
{
	*argi = 1;
	if (argc < 2)
		return CLI_RUN;
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		printf("Usage: %s [--help | --version | --check]%s\n\n%s\n\n", c->prog,
		    c->commands ? " [command]" : "", c->summary);
		if (c->commands)
			printf("Commands:\n%s\n", c->commands);
		printf("Options:\n"
		    "  --help     print this help and exit\n"
		    "  --version  print the version and exit\n"
		    "  --check    validate the configuration, print it and exit (0 valid, 2 invalid)\n\n");
		config_usage(stdout, c->settings);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("%s %s\n", c->prog, c->version);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "--check") == 0 || strcmp(argv[1], "-n") == 0) {
		*argi = 2;
		return CLI_CHECK;
	}
	if (argv[1][0] == '-') {
		fprintf(stderr, "%s: unknown option \"%s\"; try --help\n", c->prog, argv[1]);
		return CLI_EXIT_USAGE;
	}
	return CLI_RUN;
}

int
cli_start(const struct cli *c, int argc, char **argv, int *argi)
{
	char err[512];
	enum cli_action act = cli_parse(c, argc, argv, argi);

	if (act == CLI_EXIT_OK)
		return 0;
	if (act == CLI_EXIT_USAGE)
		return 2;
	if (config_load(c->settings, err, sizeof(err)) != 0 ||
	    (c->validate != NULL && c->validate(c->validate_arg, err, sizeof(err)) != 0)) {
		fprintf(stderr, "%s: %s\n", c->prog, err);
		return 2;
	}
	if (act == CLI_CHECK) {
		config_dump(stdout, c->settings);
		return 0;
	}
	return -1;
}
