/* Unit tests of the notification-consumer's settings: CONSUMER_GAP_WAIT, derived from the ack wait
 * or set, and never shorter than it. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "../../notification-consumer/settings.h"
#include "unit.h"

/* Loads the table from the environment with ack and gap (NULL: unset) and resolves it. */
static int
load(const char *ack, const char *gap, char *err, size_t errlen)
{
	if (ack != NULL)
		setenv("CONSUMER_ACK_WAIT", ack, 1);
	else
		unsetenv("CONSUMER_ACK_WAIT");
	if (gap != NULL)
		setenv("CONSUMER_GAP_WAIT", gap, 1);
	else
		unsetenv("CONSUMER_GAP_WAIT");
	err[0] = '\0';
	if (config_load(settings_table, err, errlen) != 0)
		return -1;
	return settings_resolve(NULL, err, errlen);
}

int
main(void)
{
	char err[256];

	/* Unset: twice the ack wait and 5 s, 65 s with the default ack wait. */
	CHECK(load(NULL, NULL, err, sizeof(err)) == 0);
	CHECK(settings.ack_wait_ms == 30000);
	CHECK(settings.gap_wait_ms == 65000);
	CHECK(load("3s", NULL, err, sizeof(err)) == 0);
	CHECK(settings.gap_wait_ms == 11000);
	CHECK(load("3s", "0", err, sizeof(err)) == 0);
	CHECK(settings.gap_wait_ms == 11000);

	/* Set: taken as it is when it is longer than the ack wait. */
	CHECK(load("1s", "3s", err, sizeof(err)) == 0);
	CHECK(settings.gap_wait_ms == 3000);
	CHECK(load(NULL, "2m", err, sizeof(err)) == 0);
	CHECK(settings.gap_wait_ms == 120000);

	/* Not longer than the ack wait: a crashed process's version would come back too late. */
	CHECK(load(NULL, "30s", err, sizeof(err)) == -1);
	CHECK(strstr(err, "CONSUMER_GAP_WAIT (30000ms) must be longer than CONSUMER_ACK_WAIT "
	    "(30000ms)") != NULL);
	CHECK(load("5s", "2s", err, sizeof(err)) == -1);
	CHECK(load(NULL, "soon", err, sizeof(err)) == -1);
	CHECK(strstr(err, "invalid CONSUMER_GAP_WAIT \"soon\"") != NULL);
	return unit_report("consumer_settings");
}
