/* Baseline of the consumer's NATS side: fetches and acknowledges every event, applying nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "bench_util.h"

/* Usage: js_fetch_ack <nats url> <count> [batch] */
int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	natsSubscription *sub = NULL;
	jsSubOptions so;
	jsErrCode jerr = 0;
	natsStatus s;
	long want, got = 0;
	int batch;

	if (argc < 3) {
		fprintf(stderr, "usage: js_fetch_ack <nats url> <count> [batch]\n");
		return 2;
	}
	want = atol(argv[2]);
	batch = argc > 3 ? atoi(argv[3]) : 64;
	if ((s = natsConnection_ConnectTo(&nc, argv[1])) != NATS_OK ||
	    (s = natsConnection_JetStream(&js, nc, NULL)) != NATS_OK) {
		fprintf(stderr, "js_fetch_ack: could not connect: %s\n", natsStatus_GetText(s));
		return 1;
	}
	jsSubOptions_Init(&so);
	so.Stream = "USER_EVENTS";
	so.Config.AckPolicy = js_AckExplicit;
	so.Config.DeliverPolicy = js_DeliverAll;
	so.Config.MaxAckPending = 1000;
	s = js_PullSubscribe(&sub, js, "user.events.>", "bench-fetch-ack", NULL, &so, &jerr);
	if (s != NATS_OK) {
		fprintf(stderr, "js_fetch_ack: could not subscribe: %s (%d)\n", natsStatus_GetText(s),
		    (int)jerr);
		return 1;
	}
	double t0 = now_s();
	while (got < want) {
		natsMsgList list = { 0 };

		s = natsSubscription_Fetch(&list, sub, batch, 2000, &jerr);
		if (s == NATS_TIMEOUT && list.Count == 0)
			break;
		if (s != NATS_OK && s != NATS_TIMEOUT) {
			fprintf(stderr, "js_fetch_ack: could not fetch: %s\n", natsStatus_GetText(s));
			return 1;
		}
		for (int i = 0; i < list.Count; i++)
			natsMsg_Ack(list.Msgs[i], NULL);
		got += list.Count;
		natsMsgList_Destroy(&list);
	}
	/* The last acks are flushed before the clock stops. */
	natsConnection_Flush(nc);
	double t = now_s() - t0;
	printf("{\"events\": %ld, \"seconds\": %.4f, \"rate\": %.1f}\n", got, t, got / t);
	natsSubscription_Destroy(sub);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return 0;
}
