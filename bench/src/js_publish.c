/* Baseline of the relay: publishes the outbox's events to JetStream with a plain nats.c async loop. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <nats/nats.h>

#include "bench_util.h"

/* The relay's own claim query, without the row locks: the same bodies, subjects and headers. */
static const char rows_sql[] =
    "SELECT id, event_id::text, subject, headers->>'traceparent', "
    "json_build_object('type', event_type, 'event_id', event_id, 'schema_version', 1, "
    "'occurred_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
    "'payload', payload)::text "
    "FROM outbox ORDER BY id";

static long acks, nacks;
static char first_nack[256];	/* why the first refused message was refused */

static void
on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	(void)js;
	(void)closure;
	if (pa != NULL && pae == NULL)
		__atomic_add_fetch(&acks, 1, __ATOMIC_RELAXED);
	else if (__atomic_add_fetch(&nacks, 1, __ATOMIC_RELAXED) == 1)
		snprintf(first_nack, sizeof(first_nack), "%s: %s (JetStream error %d)",
		    pae != NULL ? natsStatus_GetText(pae->Err) : "no PubAck",
		    pae != NULL && pae->ErrText != NULL ? pae->ErrText : "",
		    pae != NULL ? (int)pae->ErrCode : 0);
	natsMsg_Destroy(msg);
}

static void
die(const char *what, natsStatus s, jsErrCode jerr)
{
	fprintf(stderr, "js_publish: could not %s: %s (JetStream error %d)\n", what,
	    natsStatus_GetText(s), (int)jerr);
	exit(1);
}

/* Usage: js_publish <nats url> <stream config source url> <pg conninfo> [window]
 *        js_publish --rtt <nats url> <count>  (sync publish round trips, needs the stream) */
int
main(int argc, char **argv)
{
	natsConnection *nc = NULL, *src = NULL;
	jsCtx *js = NULL, *jsrc = NULL;
	jsOptions jo;
	jsErrCode jerr = 0;
	natsStatus s;

	if (argc >= 4 && strcmp(argv[1], "--rtt") == 0) {
		long n = atol(argv[3]);
		double *lat = calloc((size_t)n, sizeof(double));
		char id[64];

		if ((s = natsConnection_ConnectTo(&nc, argv[2])) != NATS_OK)
			die("connect", s, 0);
		if ((s = natsConnection_JetStream(&js, nc, NULL)) != NATS_OK)
			die("open JetStream", s, 0);
		for (long i = 0; i < n; i++) {
			natsMsg *m = NULL;
			jsPubAck *pa = NULL;
			double t0;

			snprintf(id, sizeof(id), "rtt-%ld-%ld", (long)time(NULL), i);
			natsMsg_Create(&m, "user.events.rtt", NULL, "{}", 2);
			natsMsgHeader_Set(m, "Nats-Msg-Id", id);
			t0 = now_s();
			s = js_PublishMsg(&pa, js, m, NULL, &jerr);
			lat[i] = now_s() - t0;
			if (s != NATS_OK)
				die("publish", s, jerr);
			jsPubAck_Destroy(pa);
			natsMsg_Destroy(m);
		}
		qsort(lat, (size_t)n, sizeof(double), cmp_double);
		printf("{\"count\": %ld, \"p50_ms\": %.4f, \"p99_ms\": %.4f}\n", n, lat[n / 2] * 1e3,
		    lat[(n * 99) / 100] * 1e3);
		return 0;
	}
	if (argc < 4) {
		fprintf(stderr, "usage: js_publish <nats url> <stream source url> <pg conninfo> [window]\n"
		    "       js_publish --rtt <nats url> <count>\n");
		return 2;
	}
	PGconn *pg = PQconnectdb(argv[3]);
	if (PQstatus(pg) != CONNECTION_OK) {
		fprintf(stderr, "js_publish: could not connect to PostgreSQL: %s", PQerrorMessage(pg));
		return 1;
	}
	PGresult *r = PQexec(pg, rows_sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "js_publish: could not read the outbox: %s", PQerrorMessage(pg));
		return 1;
	}
	int n = PQntuples(r);

	/* The same stream settings as the relay made on the source server. */
	if ((s = natsConnection_ConnectTo(&src, argv[2])) != NATS_OK)
		die("connect to the source server", s, 0);
	if ((s = natsConnection_JetStream(&jsrc, src, NULL)) != NATS_OK)
		die("open JetStream on the source server", s, 0);
	jsStreamInfo *si = NULL, *out = NULL;
	if ((s = js_GetStreamInfo(&si, jsrc, "USER_EVENTS", NULL, &jerr)) != NATS_OK)
		die("read the stream settings", s, jerr);

	if ((s = natsConnection_ConnectTo(&nc, argv[1])) != NATS_OK)
		die("connect", s, 0);
	jsOptions_Init(&jo);
	jo.PublishAsync.AckHandler = on_ack;
	if (argc > 4) {
		jo.PublishAsync.MaxPending = atoi(argv[4]);
		/* A full window waits for PubAcks, which come after an fsync each: nats.c's default
		 * of 200 ms would fail the publish. */
		jo.PublishAsync.StallWait = 60000;
	}
	if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK)
		die("open JetStream", s, 0);
	if ((s = js_AddStream(&out, js, si->Config, NULL, &jerr)) != NATS_OK)
		die("create the stream", s, jerr);
	jsStreamInfo_Destroy(out);

	jsPubOptions po;
	jsPubOptions_Init(&po);
	/* Long enough for a server that syncs every write (deploy/nats-server.conf): a timeout here
	 * would count a message the server still stores as a nack. */
	po.MaxWait = 60000;
	double t0 = now_s();
	for (int i = 0; i < n; i++) {
		natsMsg *m = NULL;

		natsMsg_Create(&m, PQgetvalue(r, i, 2), NULL, PQgetvalue(r, i, 4), PQgetlength(r, i, 4));
		natsMsgHeader_Set(m, "Nats-Msg-Id", PQgetvalue(r, i, 1));
		natsMsgHeader_Set(m, "Content-Type", "application/json");
		if (!PQgetisnull(r, i, 3))
			natsMsgHeader_Set(m, "traceparent", PQgetvalue(r, i, 3));
		if ((s = js_PublishMsgAsync(js, &m, &po)) != NATS_OK)
			die("publish", s, 0);
	}
	jsPubOptions wait;
	jsPubOptions_Init(&wait);
	wait.MaxWait = 60000;
	if ((s = js_PublishAsyncComplete(js, &wait)) != NATS_OK)
		die("wait for the PubAcks", s, 0);
	double t = now_s() - t0;
	/* The last ack handler may still be running. */
	nats_Sleep(50);
	printf("{\"rows\": %d, \"seconds\": %.4f, \"rate\": %.1f, \"acks\": %ld, \"nacks\": %ld, "
	    "\"first_nack\": \"%s\"}\n", n, t, n / t, acks, nacks, first_nack);
	PQclear(r);
	PQfinish(pg);
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	jsCtx_Destroy(jsrc);
	natsConnection_Destroy(nc);
	natsConnection_Destroy(src);
	return 0;
}
