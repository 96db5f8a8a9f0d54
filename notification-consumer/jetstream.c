/* Pull requests, acknowledgements and stream set-up on JetStream, without
 * natsSubscription_Fetch. */
#include "jetstream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct js_pull {
	natsConnection *nc;
	natsSubscription *sub;
	natsInbox *inbox;
	char next_subject[512];
	int open;		/* messages the open request may still bring */
	int64_t open_until;	/* when it has surely ended */
};

static bool
parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return true;
}

bool
js_meta_parse(const char *reply, struct js_meta *m)
{
	const char *tok[16];
	size_t len[16], n = 0, first;
	const char *p;
	uint64_t ts;

	if (reply == NULL || strncmp(reply, "$JS.ACK.", 8) != 0)
		return false;
	for (p = reply; n < 16;) {
		size_t l = strcspn(p, ".");

		tok[n] = p;
		len[n++] = l;
		if (p[l] == '\0')
			break;
		p += l + 1;
	}
	/* 9 tokens: $JS.ACK.stream.consumer.delivered.sseq.cseq.ts.pending; 11 or more when the
	 * domain and account hash follow ACK (and a random token may end it). */
	if (n == 9)
		first = 4;
	else if (n >= 11 && n <= 12)
		first = 6;
	else
		return false;
	if (!parse_u64(tok[first], len[first], &m->delivered) ||
	    !parse_u64(tok[first + 1], len[first + 1], &m->stream_seq) ||
	    !parse_u64(tok[first + 2], len[first + 2], &m->consumer_seq) ||
	    !parse_u64(tok[first + 3], len[first + 3], &ts) ||
	    !parse_u64(tok[first + 4], len[first + 4], &m->pending))
		return false;
	m->timestamp_ns = (int64_t)ts;
	return true;
}

struct js_pull *
js_pull_new(natsConnection *nc, const char *stream, const char *consumer, char *err, size_t errlen)
{
	struct js_pull *p = calloc(1, sizeof(*p));
	natsStatus s;

	if (p == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->nc = nc;
	snprintf(p->next_subject, sizeof(p->next_subject), "$JS.API.CONSUMER.MSG.NEXT.%s.%s", stream,
	    consumer);
	s = natsInbox_Create(&p->inbox);
	if (s == NATS_OK)
		s = natsConnection_SubscribeSync(&p->sub, nc, p->inbox);
	/* A batch is bounded by the request, so the default pending limits are never reached; keep
	 * them unlimited anyway so a slow apply can never make the library drop a delivered message. */
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(p->sub, -1, -1);
	if (s != NATS_OK) {
		snprintf(err, errlen, "could not subscribe the pull inbox: %s", natsStatus_GetText(s));
		js_pull_free(p);
		return NULL;
	}
	return p;
}

void
js_pull_free(struct js_pull *p)
{
	if (p == NULL)
		return;
	if (p->sub != NULL) {
		natsSubscription_Unsubscribe(p->sub);
		natsSubscription_Destroy(p->sub);
	}
	natsInbox_Destroy(p->inbox);
	free(p);
}

/* The status of a message of the pull inbox (100 heartbeat, 404 no messages, 408 expired, 409,
 * 503...), with *status and *desc pointing into its headers; 0 for a message of the stream. */
static int
pull_status(natsMsg *m, const char **status, const char **desc)
{
	if (natsMsg_GetDataLength(m) != 0 ||
	    natsMsgHeader_Get(m, "Status", status) != NATS_OK || *status == NULL)
		return 0;
	natsMsgHeader_Get(m, "Description", desc);
	return atoi(*status);
}

/* A message JetStream delivered for the consumer, with its ack subject as reply. */
static bool
is_delivery(natsMsg *m)
{
	return natsMsg_GetReply(m) != NULL && strncmp(natsMsg_GetReply(m), "$JS.ACK.", 8) == 0;
}

enum js_result
js_pull_fetch(struct js_pull *p, natsMsg **msgs, int max, long expires_ms, int *count, char *err,
    size_t errlen)
{
	int n = 0;
	natsStatus s;

	*count = 0;

	/* One request is open at a time: a new one only when the last was answered in full, ended
	 * by the server, or is surely expired; until then its messages keep arriving in the inbox. */
	if (p->open <= 0 || mono_ms() >= p->open_until) {
		char req[128];

		snprintf(req, sizeof(req), "{\"batch\":%d,\"expires\":%lld}", max,
		    (long long)expires_ms * 1000000LL);
		s = natsConnection_PublishRequestString(p->nc, p->next_subject, p->inbox, req);
		if (s != NATS_OK) {
			snprintf(err, errlen, "could not send the pull request: %s", natsStatus_GetText(s));
			return JS_FAILED;
		}
		p->open = max;
		/* The server ends the request with a 408 when it expires; the margin covers the trip. */
		p->open_until = mono_ms() + expires_ms + 1000;
	}
	while (n < max) {
		/* Wait for the first message; after it take only what is already there, so an event
		 * is never held back waiting for a full batch. */
		int64_t left = n == 0 ? p->open_until - mono_ms() : 1;
		const char *status = NULL, *desc = NULL;
		natsMsg *m = NULL;
		int code;

		if (left <= 0) {
			p->open = 0;
			break;
		}
		s = natsSubscription_NextMsg(&m, p->sub, left);
		if (s == NATS_TIMEOUT) {
			if (n == 0)
				p->open = 0;
			break;
		}
		if (s != NATS_OK) {
			p->open = 0;
			if (n > 0)
				break;
			snprintf(err, errlen, "could not read the pull inbox: %s", natsStatus_GetText(s));
			return JS_FAILED;
		}
		if ((code = pull_status(m, &status, &desc)) != 0) {
			bool gone;

			if (code == 100) {
				natsMsg_Destroy(m);
				continue;
			}
			p->open = 0;
			/* 404 no messages, 408 request expired: the request is over. */
			if (code == 404 || code == 408) {
				natsMsg_Destroy(m);
				break;
			}
			snprintf(err, errlen, "pull request refused: %s %s", status, desc ? desc : "");
			/* 409 Consumer Deleted, or 503: nothing answers for the consumer any more. Read
			 * before the message goes: status and desc point into its headers. */
			gone = code == 503 || (code == 409 && desc != NULL && strstr(desc, "Deleted") != NULL);
			natsMsg_Destroy(m);
			if (n > 0)
				break;
			return gone ? JS_CONSUMER_GONE : JS_FAILED;
		}
		if (!is_delivery(m)) {
			natsMsg_Destroy(m);
			continue;
		}
		msgs[n++] = m;
		p->open--;
	}
	*count = n;
	return JS_OK;
}

void
js_pull_close(struct js_pull *p)
{
	while (p->open > 0 && mono_ms() < p->open_until) {
		const char *status = NULL, *desc = NULL;
		natsMsg *m = NULL;
		int code;

		if (natsSubscription_NextMsg(&m, p->sub, p->open_until - mono_ms()) != NATS_OK)
			break;
		if ((code = pull_status(m, &status, &desc)) != 0) {
			natsMsg_Destroy(m);
			if (code == 100)
				continue;
			break;	/* 404, 408 or a refusal: the request is over */
		}
		if (is_delivery(m)) {
			js_nak(p->nc, m, 0);
			p->open--;
		}
		natsMsg_Destroy(m);
	}
	p->open = 0;
}

static int
ack_request(natsConnection *nc, natsMsg *m, const char *body, long timeout_ms, char *err,
    size_t errlen)
{
	natsMsg *resp = NULL;
	natsStatus s;

	s = natsConnection_RequestString(&resp, nc, natsMsg_GetReply(m), body, timeout_ms);
	natsMsg_Destroy(resp);
	if (s != NATS_OK) {
		snprintf(err, errlen, "could not acknowledge (%s): %s", body, natsStatus_GetText(s));
		return -1;
	}
	return 0;
}

int
js_ack_sync(natsConnection *nc, natsMsg *m, long timeout_ms, char *err, size_t errlen)
{
	return ack_request(nc, m, "+ACK", timeout_ms, err, errlen);
}

int
js_ack(natsConnection *nc, natsMsg *m, char *err, size_t errlen)
{
	natsStatus s = natsConnection_PublishString(nc, natsMsg_GetReply(m), "+ACK");

	if (s != NATS_OK) {
		snprintf(err, errlen, "could not acknowledge: %s", natsStatus_GetText(s));
		return -1;
	}
	return 0;
}

int
js_term_sync(natsConnection *nc, natsMsg *m, long timeout_ms, char *err, size_t errlen)
{
	return ack_request(nc, m, "+TERM", timeout_ms, err, errlen);
}

void
js_nak(natsConnection *nc, natsMsg *m, long delay_ms)
{
	char body[64];

	if (delay_ms > 0)
		snprintf(body, sizeof(body), "-NAK {\"delay\":%lld}", (long long)delay_ms * 1000000LL);
	else
		snprintf(body, sizeof(body), "-NAK");
	natsConnection_PublishString(nc, natsMsg_GetReply(m), body);
}

void
js_in_progress(natsConnection *nc, natsMsg *m)
{
	natsConnection_PublishString(nc, natsMsg_GetReply(m), "+WPI");
}

static void
status_text(natsStatus s, jsErrCode jerr, char *out, size_t outlen)
{
	const char *last = nats_GetLastError(NULL);

	if (last != NULL && *last)
		snprintf(out, outlen, "%s", last);
	else
		snprintf(out, outlen, "%s", natsStatus_GetText(s));
	if (jerr != 0) {
		size_t l = strlen(out);

		snprintf(out + l, outlen - l, " (error %d)", (int)jerr);
	}
}

int
js_durable_ensure(jsCtx *js, const struct js_durable_config *c, char *err, size_t errlen)
{
	jsStreamInfo *si = NULL;
	jsConsumerInfo *ci = NULL;
	jsConsumerConfig cc;
	jsErrCode jerr = 0;
	char why[256];
	natsStatus s;

	s = js_GetStreamInfo(&si, js, c->stream, NULL, &jerr);
	jsStreamInfo_Destroy(si);
	if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
		snprintf(err, errlen, "stream %s not found", c->stream);
		return -1;
	}
	if (s != NATS_OK) {
		status_text(s, jerr, why, sizeof(why));
		snprintf(err, errlen, "could not look up stream %s: %s", c->stream, why);
		return -1;
	}
	jerr = 0;
	s = js_GetConsumerInfo(&ci, js, c->stream, c->name, NULL, &jerr);
	if (s == NATS_OK) {
		/* Reused as it is: recreating it would lose its position. */
		jsConsumerInfo_Destroy(ci);
		return 0;
	}
	if (s != NATS_NOT_FOUND && jerr != JSConsumerNotFoundErr) {
		status_text(s, jerr, why, sizeof(why));
		snprintf(err, errlen, "could not look up consumer %s: %s", c->name, why);
		return -1;
	}
	jsConsumerConfig_Init(&cc);
	cc.Durable = c->name;
	cc.Name = c->name;
	cc.DeliverPolicy = js_DeliverAll;
	cc.AckPolicy = js_AckExplicit;
	cc.AckWait = (int64_t)c->ack_wait_ms * 1000000LL;
	cc.MaxDeliver = -1;
	cc.MaxAckPending = c->max_ack_pending;
	cc.Description = "applies user events to MongoDB";
	jerr = 0;
	s = js_AddConsumer(&ci, js, c->stream, &cc, NULL, &jerr);
	jsConsumerInfo_Destroy(ci);
	if (s != NATS_OK) {
		status_text(s, jerr, why, sizeof(why));
		snprintf(err, errlen, "could not create consumer %s on %s: %s", c->name, c->stream, why);
		return -1;
	}
	return 0;
}

int
js_dlq_ensure(jsCtx *js, const char *name, const char *prefix, char *err, size_t errlen)
{
	jsStreamInfo *si = NULL;
	jsStreamConfig sc;
	jsErrCode jerr = 0;
	char subject[256], why[256];
	const char *subjects[1] = { subject };
	natsStatus s;

	s = js_GetStreamInfo(&si, js, name, NULL, &jerr);
	jsStreamInfo_Destroy(si);
	if (s == NATS_OK)
		return 0;
	if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
		status_text(s, jerr, why, sizeof(why));
		snprintf(err, errlen, "could not look up stream %s: %s", name, why);
		return -1;
	}
	snprintf(subject, sizeof(subject), "%s.>", prefix);
	jsStreamConfig_Init(&sc);
	sc.Name = name;
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Storage = js_FileStorage;
	sc.Retention = js_LimitsPolicy;
	sc.Duplicates = 120LL * 1000000000LL;
	si = NULL;
	jerr = 0;
	s = js_AddStream(&si, js, &sc, NULL, &jerr);
	jsStreamInfo_Destroy(si);
	if (s != NATS_OK) {
		/* Another instance may have created it meanwhile. */
		si = NULL;
		if (js_GetStreamInfo(&si, js, name, NULL, NULL) == NATS_OK) {
			jsStreamInfo_Destroy(si);
			return 0;
		}
		status_text(s, jerr, why, sizeof(why));
		snprintf(err, errlen, "could not create stream %s on \"%s\": %s", name, subject, why);
		return -1;
	}
	return 0;
}

int
js_dlq_publish(jsCtx *js, natsMsg *m, const char *prefix, const char *stream,
    const struct js_meta *meta, const char *reason, long timeout_ms, char *err, size_t errlen)
{
	char subject[512], num[32], msgid[96];
	const char **keys = NULL;
	int nkeys = 0;
	natsMsg *out = NULL;
	jsPubOptions po;
	jsPubAck *pa = NULL;
	jsErrCode jerr = 0;
	natsStatus s;
	int rc = -1;

	snprintf(subject, sizeof(subject), "%s.%s", prefix, natsMsg_GetSubject(m));
	s = natsMsg_Create(&out, subject, NULL, natsMsg_GetData(m), natsMsg_GetDataLength(m));
	if (s != NATS_OK)
		goto fail;
	if (natsMsgHeader_Keys(m, &keys, &nkeys) == NATS_OK) {
		for (int i = 0; i < nkeys && s == NATS_OK; i++) {
			const char **vals = NULL;
			int nvals = 0;

			/* The dead letter gets its own id, so a retry after a crash is deduplicated. */
			if (strcasecmp(keys[i], "Nats-Msg-Id") == 0) {
				const char *v = NULL;

				if (natsMsgHeader_Get(m, keys[i], &v) == NATS_OK && v != NULL)
					s = natsMsgHeader_Set(out, "Dlq-Original-Msg-Id", v);
				continue;
			}
			if (natsMsgHeader_Values(m, keys[i], &vals, &nvals) != NATS_OK)
				continue;
			for (int j = 0; j < nvals && s == NATS_OK; j++)
				s = natsMsgHeader_Add(out, keys[i], vals[j]);
			free((void *)vals);
		}
		free((void *)keys);
	}
	snprintf(msgid, sizeof(msgid), "%s-%" PRIu64, stream, meta->stream_seq);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(out, "Nats-Msg-Id", msgid);
	/* event_parse() escaped the reason as a log line is: no CR or LF can start a header line. */
	if (s == NATS_OK)
		s = natsMsgHeader_Set(out, "Dlq-Reason", reason);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(out, "Dlq-Stream", stream);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(out, "Dlq-Subject", natsMsg_GetSubject(m));
	snprintf(num, sizeof(num), "%" PRIu64, meta->stream_seq);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(out, "Dlq-Sequence", num);
	snprintf(num, sizeof(num), "%" PRIu64, meta->delivered);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(out, "Dlq-Delivered", num);
	if (s != NATS_OK)
		goto fail;
	jsPubOptions_Init(&po);
	po.MaxWait = timeout_ms;
	s = js_PublishMsg(&pa, js, out, &po, &jerr);
	jsPubAck_Destroy(pa);
	if (s == NATS_OK)
		rc = 0;
fail:
	if (rc != 0) {
		char why[256];

		status_text(s, jerr, why, sizeof(why));
		snprintf(err, errlen, "could not publish \"%s\": %s", subject, why);
	}
	natsMsg_Destroy(out);
	return rc;
}

enum js_result
js_consumer_lag(jsCtx *js, const char *stream, const char *name, uint64_t *pending,
    int64_t *ack_pending, char *err, size_t errlen)
{
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	natsStatus s;

	s = js_GetConsumerInfo(&ci, js, stream, name, NULL, &jerr);
	if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr) {
		snprintf(err, errlen, "consumer %s on %s not found", name, stream);
		return JS_CONSUMER_GONE;
	}
	if (s != NATS_OK) {
		char why[256];

		status_text(s, jerr, why, sizeof(why));
		snprintf(err, errlen, "could not read consumer %s: %s", name, why);
		return JS_FAILED;
	}
	*pending = ci->NumPending;
	*ack_pending = ci->NumAckPending;
	jsConsumerInfo_Destroy(ci);
	return JS_OK;
}

int
js_ephemeral_new(jsCtx *js, const char *stream, const struct js_start *start, char *name,
    size_t namelen, char *err, size_t errlen)
{
	jsConsumerInfo *ci = NULL;
	jsConsumerConfig cc;
	jsErrCode jerr = 0;
	natsStatus s;

	jsConsumerConfig_Init(&cc);
	cc.AckPolicy = js_AckAll;
	cc.MaxDeliver = -1;
	cc.MaxAckPending = -1;
	/* Fixed, not settings: replay acknowledges each batch as a whole, well within a minute, and
	 * the server removes the consumer a minute after a crashed replay stopped pulling. */
	cc.AckWait = 60LL * 1000000000LL;
	cc.InactiveThreshold = 60LL * 1000000000LL;
	cc.Description = "notification-consumer replay";
	if (start->seq > 0) {
		cc.DeliverPolicy = js_DeliverByStartSequence;
		cc.OptStartSeq = start->seq;
	} else if (start->time_ns > 0) {
		cc.DeliverPolicy = js_DeliverByStartTime;
		cc.OptStartTime = start->time_ns;
	} else {
		cc.DeliverPolicy = js_DeliverAll;
	}
	s = js_AddConsumer(&ci, js, stream, &cc, NULL, &jerr);
	if (s != NATS_OK) {
		char why[256];

		status_text(s, jerr, why, sizeof(why));
		if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
			snprintf(err, errlen, "stream %s not found", stream);
		else
			snprintf(err, errlen, "could not create a replay consumer on %s: %s", stream, why);
		return -1;
	}
	snprintf(name, namelen, "%s", ci->Name);
	jsConsumerInfo_Destroy(ci);
	return 0;
}

void
js_consumer_delete(jsCtx *js, const char *stream, const char *name)
{
	js_DeleteConsumer(js, stream, name, NULL, NULL);
}

/* Reads the stream's info into *si (the caller jsStreamInfo_Destroy()s it). Returns 0, or -1 with
 * err filled. */
static int
stream_info(jsCtx *js, const char *stream, jsStreamInfo **si, char *err, size_t errlen)
{
	jsErrCode jerr = 0;
	natsStatus s;

	s = js_GetStreamInfo(si, js, stream, NULL, &jerr);
	if (s != NATS_OK) {
		char why[256];

		status_text(s, jerr, why, sizeof(why));
		if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
			snprintf(err, errlen, "stream %s not found", stream);
		else
			snprintf(err, errlen, "could not look up stream %s: %s", stream, why);
		return -1;
	}
	return 0;
}

int
js_stream_seqs(jsCtx *js, const char *stream, uint64_t *first, uint64_t *last, char *err,
    size_t errlen)
{
	jsStreamInfo *si = NULL;

	if (stream_info(js, stream, &si, err, errlen) != 0)
		return -1;
	*last = si->State.Msgs == 0 ? 0 : si->State.LastSeq;
	if (first != NULL)
		*first = si->State.FirstSeq;
	jsStreamInfo_Destroy(si);
	return 0;
}

int
js_stream_msgs(jsCtx *js, const char *stream, uint64_t *msgs, char *err, size_t errlen)
{
	jsStreamInfo *si = NULL;

	if (stream_info(js, stream, &si, err, errlen) != 0)
		return -1;
	*msgs = si->State.Msgs;
	jsStreamInfo_Destroy(si);
	return 0;
}
