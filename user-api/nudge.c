/* The nudge connection: one shared natsConnection (thread-safe in nats.c). */
#include "nudge.h"

#include "log.h"
#include "metrics.h"
#include "natsconn.h"

static natsConnection *nudge_nc;
static struct metrics_series *nudges_sent, *nudges_skipped;

int
nudge_start(const struct nats_settings *nats, char *err, size_t errlen)
{
	nudges_sent = metrics_counter("outbox_nudges_total", "Relay wake-ups sent after commits",
	    "result", "sent", NULL);
	nudges_skipped = metrics_counter("outbox_nudges_total", "Relay wake-ups sent after commits",
	    "result", "skipped", NULL);
	if (nats->url == NULL || *nats->url == '\0') {
		log_info("NATS_URL is empty: no wake-up nudges, the relay finds new outbox rows by "
		    "polling");
		return 0;
	}
	nudge_nc = natsconn_open(nats, "user-api", err, errlen);
	return nudge_nc != NULL ? 0 : -1;
}

void
nudge_send(void)
{
	if (nudge_nc == NULL)		/* nudges are off */
		return;
	/* While disconnected nats.c would buffer; a stale nudge is worthless, so skip it. */
	if (!natsconn_ok(nudge_nc) ||
	    natsConnection_Publish(nudge_nc, OUTBOX_NUDGE_SUBJECT, NULL, 0) != NATS_OK) {
		metrics_add(nudges_skipped, 1);
		return;
	}
	metrics_add(nudges_sent, 1);
}

void
nudge_stop(void)
{
	if (nudge_nc == NULL)
		return;
	natsConnection_FlushTimeout(nudge_nc, 500);
	natsConnection_Destroy(nudge_nc);
	nudge_nc = NULL;
}
