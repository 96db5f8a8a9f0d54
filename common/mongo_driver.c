/* Sets up the MongoDB driver: log handler, its counters' segment, URIs with timeouts. */
#include "mongo_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

/* The driver's own messages as lines of the process's log, each at the level the driver gave it,
 * but one: the driver warns when the server refuses the endSessions it sends as a client closes,
 * and FerretDB 1.24 has no such command. The sessions specification tells drivers to ignore
 * that error, so it is a debug line here, not a warning after every run. */
static void
on_mongoc_log(mongoc_log_level_t level, const char *domain, const char *message, void *arg)
{
	(void)arg;
	if (level == MONGOC_LOG_LEVEL_WARNING && strncmp(message, "Couldn't send \"endSessions\"", 27) == 0)
		level = MONGOC_LOG_LEVEL_DEBUG;
	switch (level) {
	case MONGOC_LOG_LEVEL_ERROR:
	case MONGOC_LOG_LEVEL_CRITICAL:
		log_error("mongoc %s: %s", domain, message);
		break;
	case MONGOC_LOG_LEVEL_WARNING:
		log_warnx("mongoc %s: %s", domain, message);
		break;
	case MONGOC_LOG_LEVEL_MESSAGE:
	case MONGOC_LOG_LEVEL_INFO:
		log_info("mongoc %s: %s", domain, message);
		break;
	default:
		log_debug("mongoc %s: %s", domain, message);
		break;
	}
}

/* mongoc_init() keeps the driver's counters in the shared memory segment /dev/shm/mongoc-<pid>,
 * which only a clean exit removes; a later process with the same pid then warns "Falling back to
 * malloc for counters." on stderr. Debian's libmongoc also runs mongoc_init() from a constructor,
 * before main(). Removing the name at once leaves nothing behind for a kill: the mapping stays, so
 * the counters work, only the mongoc-stat tool cannot find them. (The consumer's store.c does the
 * same for its own process; docs/consumer.md tells the whole story.) */
static void
counters_unlink(void)
{
	char name[32];

	snprintf(name, sizeof(name), "/mongoc-%u", (unsigned)getpid());
	(void)shm_unlink(name);
}

void
mongo_driver_init(void)
{
	/* Before mongoc_init(), so that whatever it says is a line of our log. */
	mongoc_log_set_handler(on_mongoc_log, NULL);
	mongoc_init();
	counters_unlink();
}

void
mongo_driver_cleanup(void)
{
	mongoc_cleanup();
}

mongoc_uri_t *
mongo_uri_parse(const char *uri, long timeout_ms, const char *appname, char *err, size_t errlen)
{
	size_t len = strlen(uri) + 9;
	char *shown = malloc(len);
	bson_error_t e;
	mongoc_uri_t *u;

	if (shown == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* What the parser says (an unknown option) is a line of our log, even before
	 * mongo_driver_init() (a check of the settings). */
	mongoc_log_set_handler(on_mongoc_log, NULL);
	u = mongoc_uri_new_with_error(uri, &e);
	if (u == NULL) {
		config_url_redact(uri, shown, len);
		snprintf(err, errlen, "invalid MONGODB_URI \"%s\": %s", shown, e.message);
		free(shown);
		return NULL;
	}
	free(shown);
	if (!mongoc_uri_has_option(u, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
		mongoc_uri_set_option_as_int32(u, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, (int32_t)timeout_ms);
	if (!mongoc_uri_has_option(u, MONGOC_URI_CONNECTTIMEOUTMS))
		mongoc_uri_set_option_as_int32(u, MONGOC_URI_CONNECTTIMEOUTMS, (int32_t)timeout_ms);
	if (!mongoc_uri_has_option(u, MONGOC_URI_SOCKETTIMEOUTMS))
		mongoc_uri_set_option_as_int32(u, MONGOC_URI_SOCKETTIMEOUTMS, (int32_t)(timeout_ms * 5));
	if (!mongoc_uri_has_option(u, MONGOC_URI_HEARTBEATFREQUENCYMS))
		mongoc_uri_set_option_as_int32(u, MONGOC_URI_HEARTBEATFREQUENCYMS, 1000);
	if (appname != NULL)
		mongoc_uri_set_appname(u, appname);
	return u;
}
