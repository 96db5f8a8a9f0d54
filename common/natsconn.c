/* nats.c gives up after 60 reconnect attempts by default; these options never give up. */
#include "natsconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static void
on_disconnected(natsConnection *nc, void *closure)
{
	/* Closing our own connection at shutdown disconnects it too: that is no news. */
	if (natsConnection_IsClosed(nc))
		log_debug("nats: connection to %s closed", (const char *)closure);
	else
		log_warnx("nats: disconnected from %s, reconnecting", (const char *)closure);
}

static void
on_reconnected(natsConnection *nc, void *closure)
{
	(void)nc;
	log_info("nats: reconnected to %s", (const char *)closure);
}

static void
on_connected(natsConnection *nc, void *closure)
{
	(void)nc;
	log_info("nats: connected to %s", (const char *)closure);
}

/* natsOptions_SetURL takes one URL; a comma-separated list (a cluster) goes to SetServers. */
static natsStatus
set_urls(natsOptions *opts, const char *url)
{
	const char *servers[16];
	char *copy, *save = NULL, *tok;
	int n = 0;
	natsStatus s;

	if (strchr(url, ',') == NULL)
		return natsOptions_SetURL(opts, url);
	if ((copy = strdup(url)) == NULL)
		return NATS_NO_MEMORY;
	for (tok = strtok_r(copy, ",", &save); tok != NULL && n < 16; tok = strtok_r(NULL, ",", &save))
		if (*tok != '\0')
			servers[n++] = tok;
	s = n > 0 ? natsOptions_SetServers(opts, servers, n) : NATS_INVALID_ARG;
	free(copy);
	return s;
}

natsConnection *
natsconn_open(const char *url, const char *name, char *err, size_t errlen)
{
	natsOptions *opts = NULL;
	natsConnection *nc = NULL;
	natsStatus s;

	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = set_urls(opts, url);
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, name);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, 250);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectJitter(opts, 100, 1000);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetRetryOnFailedConnect(opts, true, on_connected, (void *)url);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(opts, on_disconnected, (void *)url);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(opts, on_reconnected, (void *)url);
	if (s == NATS_OK) {
		s = natsConnection_Connect(&nc, opts);
		/* Not connected yet is fine: the library keeps trying in the background. */
		if (s == NATS_NOT_YET_CONNECTED)
			s = NATS_OK;
		else if (s == NATS_OK)
			log_info("nats: connected to %s", url);
	}
	natsOptions_Destroy(opts);
	if (s != NATS_OK) {
		snprintf(err, errlen, "could not connect to NATS at \"%s\": %s", url, natsStatus_GetText(s));
		natsConnection_Destroy(nc);
		return NULL;
	}
	return nc;
}

bool
natsconn_ok(natsConnection *nc)
{
	return nc != NULL && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED;
}
