/* Failpoints: a short list parsed once from FAILPOINTS, looked up by name when armed. */
#include "failpoint.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

enum fp_action { FP_CRASH, FP_PAUSE, FP_ERROR, FP_ON };

struct failpoint {
	char name[64];
	enum fp_action action;
	long pause_ms;
	long on_hit;		/* 0: every hit (error: the first only) */
	atomic_long hits;
	atomic_bool fired;
};

bool failpoints_armed;
static struct failpoint points[16];
static size_t npoints;

static int
parse_one(char *item, char *err, unsigned long errlen)
{
	struct failpoint *fp;
	char *eq = strchr(item, '='), *at, *action;

	if (eq == NULL || eq == item) {
		snprintf(err, errlen, "invalid FAILPOINTS entry \"%s\": expected name=action", item);
		return -1;
	}
	if (npoints == ARRAY_SIZE(points)) {
		snprintf(err, errlen, "too many FAILPOINTS entries (at most %zu)", ARRAY_SIZE(points));
		return -1;
	}
	*eq = '\0';
	action = eq + 1;
	fp = &points[npoints];
	memset(fp, 0, sizeof(*fp));
	snprintf(fp->name, sizeof(fp->name), "%s", item);
	at = strchr(action, '@');
	if (at != NULL) {
		*at = '\0';
		fp->on_hit = strtol(at + 1, NULL, 10);
		if (fp->on_hit < 1) {
			snprintf(err, errlen, "invalid FAILPOINTS hit count \"%s\" for \"%s\"", at + 1, item);
			return -1;
		}
	}
	if (strcmp(action, "crash") == 0) {
		fp->action = FP_CRASH;
	} else if (strcmp(action, "error") == 0) {
		fp->action = FP_ERROR;
	} else if (strcmp(action, "on") == 0) {
		fp->action = FP_ON;
	} else if (strncmp(action, "pause(", 6) == 0 && action[strlen(action) - 1] == ')') {
		fp->action = FP_PAUSE;
		fp->pause_ms = strtol(action + 6, NULL, 10);
		if (fp->pause_ms <= 0) {
			snprintf(err, errlen, "invalid FAILPOINTS pause \"%s\" for \"%s\"", action, item);
			return -1;
		}
	} else {
		snprintf(err, errlen, "invalid FAILPOINTS action \"%s\" for \"%s\": expected crash, "
		    "pause(MS), error or on", action, item);
		return -1;
	}
	npoints++;
	return 0;
}

int
failpoint_init(char *err, unsigned long errlen)
{
	const char *env = getenv("FAILPOINTS");
	char *copy, *save = NULL, *item;
	int rc = 0;

	if (env == NULL || *env == '\0')
		return 0;
	copy = strdup(env);
	if (copy == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (item = strtok_r(copy, ";,", &save); item != NULL; item = strtok_r(NULL, ";,", &save)) {
		if (parse_one(item, err, errlen) != 0) {
			rc = -1;
			break;
		}
	}
	free(copy);
	if (rc == 0 && npoints > 0) {
		failpoints_armed = true;
		for (size_t i = 0; i < npoints; i++)
			log_warnx("failpoint armed: %s", points[i].name);
	}
	return rc;
}

int
failpoint_eval(const char *name)
{
	for (size_t i = 0; i < npoints; i++) {
		struct failpoint *fp = &points[i];
		long hit;

		if (strcmp(fp->name, name) != 0)
			continue;
		hit = atomic_fetch_add(&fp->hits, 1) + 1;
		if (fp->on_hit != 0 && hit != fp->on_hit)
			return 0;
		switch (fp->action) {
		case FP_CRASH:
			log_warnx("failpoint %s: crash", name);
			raise(SIGKILL);
			_exit(137);
		case FP_PAUSE:
			log_warnx("failpoint %s: pause %ldms", name, fp->pause_ms);
			usleep((useconds_t)fp->pause_ms * 1000);
			return 0;
		case FP_ERROR:
			if (atomic_exchange(&fp->fired, true))
				return 0;
			log_warnx("failpoint %s: error", name);
			return -1;
		case FP_ON:
			/* Logged once: it may be passed at every event. */
			if (!atomic_exchange(&fp->fired, true))
				log_warnx("failpoint %s: on", name);
			return -1;
		}
	}
	return 0;
}
