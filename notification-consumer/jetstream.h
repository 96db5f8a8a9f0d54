/* JetStream plumbing for the consumer: the durable and ephemeral pull consumers, a pull request
 * made by hand on a private inbox, acknowledgements, and the dead-letter stream.
 *
 * natsSubscription_Fetch in Debian's libnats 3.4.1 spins on timeouts (nats.c PR 634) and can
 * overflow its buffer when messages of an earlier request are still queued (PR 749), so it is not
 * used: js_pull_fetch() publishes the CONSUMER.MSG.NEXT request itself and reads the inbox with
 * natsSubscription_NextMsg, where leftovers of an earlier request are just more messages. */
#ifndef CONSUMER_JETSTREAM_H
#define CONSUMER_JETSTREAM_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the ack subject of a JetStream message says about it. */
struct js_meta {
	uint64_t delivered;	/* delivery count, 1 on the first */
	uint64_t stream_seq;
	uint64_t consumer_seq;
	int64_t timestamp_ns;	/* when the stream stored it */
	uint64_t pending;	/* messages left for the consumer */
};

/* Parses "$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>" and the longer
 * form with domain and account hash. Returns false when reply is not such a subject. */
bool js_meta_parse(const char *reply, struct js_meta *m);

/* What a request about a consumer came to, where "failed" and "the consumer is gone" call for
 * different answers. */
enum js_result {
	JS_OK,
	JS_FAILED,		/* not made, not answered, or refused: err says why; try again later */
	JS_CONSUMER_GONE,	/* the consumer (or its stream) does not exist: set it up again */
};

struct js_pull;

/* Subscribes a private inbox for pull requests to stream/consumer. The caller js_pull_free()s the
 * result; NULL with err filled on failure. */
struct js_pull *js_pull_new(natsConnection *nc, const char *stream, const char *consumer,
    char *err, size_t errlen);
void js_pull_free(struct js_pull *p);

/* Asks for up to max messages, waiting at most expires_ms, and stores them in msgs and their number
 * in *n (0 when none came; the caller natsMsg_Destroy()s each). JS_OK; JS_CONSUMER_GONE, or
 * JS_FAILED when the request could not be made or the server refused it, both with err filled and
 * *n 0. */
enum js_result js_pull_fetch(struct js_pull *p, natsMsg **msgs, int max, long expires_ms, int *n,
    char *err, size_t errlen) __attribute__((warn_unused_result));

/* Waits for the open pull request to end (its 408, or its expiry) and hands back (nak) what still
 * arrives meanwhile, so that a message handed back at shutdown is not delivered again to an
 * inbox nobody reads any more (it would wait out the ack wait). Makes no new request. */
void js_pull_close(struct js_pull *p);

/* Acknowledges m and waits up to timeout_ms for the server to confirm it. */
int js_ack_sync(natsConnection *nc, natsMsg *m, long timeout_ms, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Acknowledges m without waiting for the server to confirm: an ack that gets lost brings m back
 * after the ack wait, where it is found stale. -1 with err filled when it could not be sent. */
int js_ack(natsConnection *nc, natsMsg *m, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Fire-and-forget negative ack: redeliver after delay_ms (0: at once). */
void js_nak(natsConnection *nc, natsMsg *m, long delay_ms);
/* Resets the server's ack timer for m while it is still being worked on. */
void js_in_progress(natsConnection *nc, natsMsg *m);
/* Tells the server never to deliver m again, and waits for it to confirm. */
int js_term_sync(natsConnection *nc, natsMsg *m, long timeout_ms, char *err, size_t errlen)
    __attribute__((warn_unused_result));

struct js_durable_config {
	const char *stream;
	const char *name;
	long ack_wait_ms;
	long max_ack_pending;
};

/* Makes sure the stream exists and the durable pull consumer is in place: an existing consumer is
 * reused as it is (never recreated, so no event is skipped); a missing one is created with
 * DeliverAll, explicit ack and unlimited deliveries. Returns -1 with err filled (e.g. "stream
 * USER_EVENTS not found") when it cannot be done now. */
int js_durable_ensure(jsCtx *js, const struct js_durable_config *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Creates the dead-letter stream on subjects "<prefix>.>" unless it exists. */
int js_dlq_ensure(jsCtx *js, const char *name, const char *prefix, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Publishes m to "<prefix>.<its subject>" with its headers plus Dlq-Reason, Dlq-Stream,
 * Dlq-Subject, Dlq-Sequence and Dlq-Delivered; waits up to timeout_ms for the PubAck. */
int js_dlq_publish(jsCtx *js, natsMsg *m, const char *prefix, const char *stream,
    const struct js_meta *meta, const char *reason, long timeout_ms, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Reads the consumer's lag: messages not yet delivered and delivered but not acknowledged.
 * JS_OK; JS_CONSUMER_GONE when the consumer (or its stream) does not exist, JS_FAILED when the
 * server could not tell, both with err filled. */
enum js_result js_consumer_lag(jsCtx *js, const char *stream, const char *name, uint64_t *pending,
    int64_t *ack_pending, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Where an ephemeral consumer starts. */
struct js_start {
	uint64_t seq;		/* > 0: from this stream sequence */
	int64_t time_ns;	/* > 0: from this time; else from the first message */
};

/* Creates an ephemeral pull consumer with ack-all, and writes its server-given name to
 * name (size namelen). The caller removes it with js_consumer_delete(). */
int js_ephemeral_new(jsCtx *js, const char *stream, const struct js_start *start, char *name,
    size_t namelen, char *err, size_t errlen) __attribute__((warn_unused_result));
void js_consumer_delete(jsCtx *js, const char *stream, const char *name);

/* The stream's first and last sequence (first may be NULL): last is 0 when it is empty; first is
 * above 1 once events left its start (a MaxAge, a purge), 0 or 1 when it holds them all. */
int js_stream_seqs(jsCtx *js, const char *stream, uint64_t *first, uint64_t *last, char *err,
    size_t errlen) __attribute__((warn_unused_result));
/* The number of messages the stream holds now. Returns 0, or -1 with err filled (no such stream,
 * or the server could not tell). */
int js_stream_msgs(jsCtx *js, const char *stream, uint64_t *msgs, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
