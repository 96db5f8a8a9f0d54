/* One batch of outbox rows: claimed in a transaction, published asynchronously, marked published
 * (stream sequence and time) once acked; the rows stay for the relay's retention and sweep.
 * Nothing here knows of failpoints: the relay puts them around these calls. */
#ifndef RELAY_BATCH_H
#define RELAY_BATCH_H

#include <libpq-fe.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "watch.h"

struct outbox_batch;

/* What became of one batch. */
struct batch_result {
	size_t claimed;		/* rows taken from the outbox */
	size_t acked;		/* positive PubAcks, duplicates included */
	size_t duplicates;	/* PubAcks that said the stream already had the event */
	size_t failed;		/* rows without a positive PubAck */
	size_t dead;		/* rows moved to outbox_dead */
	double publish_seconds;	/* from the first publish to the last PubAck */
	int js_error;		/* the JetStream error code of the first negative PubAck, or 0 */
};

/* Returns a new, empty batch; the caller outbox_batch_free()s it. */
struct outbox_batch *outbox_batch_new(void);
void outbox_batch_free(struct outbox_batch *b);

/* Sets the PubAck handler of opts to this batch. The JetStream context made with opts must only
 * publish through this batch, and the batch must outlive it. */
void outbox_batch_js_options(struct outbox_batch *b, jsOptions *opts);

/* Starts a claim on conn without waiting for it, so that the caller can publish another batch
 * while PostgreSQL works: opens a transaction and asks for up to limit waiting (not yet published)
 * rows, oldest id first, skipping rows another transaction holds. With after > 0 only rows with a higher id are claimed:
 * the caller passes the last id of the batch claimed just before, still locked, so the claim
 * starts right behind it instead of stepping over its rows. Returns 0, or -1 with err filled. */
int outbox_batch_claim_send(struct outbox_batch *b, PGconn *conn, long limit, int64_t after,
    char *err, size_t errlen) __attribute__((warn_unused_result));

/* What became of the commit sent ahead of a claim by outbox_batch_commit_send(). */
enum batch_commit {
	BATCH_COMMIT_NONE,	/* no commit was in the round trip */
	BATCH_COMMITTED,	/* the acknowledged rows are marked published for good */
	BATCH_COMMIT_FAILED,	/* rolled back: the rows stay in the outbox, nothing was claimed */
};

/* Reads the answer of the round trip that outbox_batch_claim_send() or
 * outbox_batch_commit_send() started. *commit says what became of a commit in it. Returns the
 * number of rows claimed (0 leaves the claim's transaction open too; 0 as well when only a commit
 * was sent, with no transaction open), or -1 with err filled (the transaction is then rolled
 * back; after a failed commit, err says why it failed). */
long outbox_batch_collect(struct outbox_batch *b, PGconn *conn, enum batch_commit *commit,
    char *err, size_t errlen) __attribute__((warn_unused_result));

/* The highest id of the claimed rows (they are in id order), or 0 when there are none. */
int64_t outbox_batch_last_id(const struct outbox_batch *b);

/* Moves the claimed rows that the server could never accept (over max_payload bytes) to
 * outbox_dead, inside the claim's transaction. Returns how many were moved, or -1 with err filled.
 * Each moved row's event id is written to the log by the caller through outbox_batch_dead_id(). */
long outbox_batch_bury(struct outbox_batch *b, PGconn *conn, int64_t max_payload, char *err,
    size_t errlen) __attribute__((warn_unused_result));
/* The event id and subject of the i-th moved row of the last outbox_batch_bury(), or NULL. */
const char *outbox_batch_dead_id(const struct outbox_batch *b, size_t i, const char **subject,
    size_t *bytes);

/* Publishes every claimed row still pending through js (each with timeout_ms as its MaxWait) and
 * returns without waiting for the PubAcks, so that the caller can claim the next batch meanwhile.
 * A publish the library refuses ends the sending and becomes the batch's error, reported by
 * outbox_batch_await(). */
void outbox_batch_send(struct outbox_batch *b, jsCtx *js, long timeout_ms);

/* Waits for the PubAcks of what outbox_batch_send() published (each times out after its MaxWait).
 * Returns 0 when every row got a positive PubAck; otherwise -1 with err naming the first failure,
 * and the PubAcks still missing are dropped when they come. */
int outbox_batch_await(struct outbox_batch *b, jsCtx *js, long timeout_ms, char *err,
    size_t errlen) __attribute__((warn_unused_result));

/* Gives up the PubAcks still pending on js without waiting (they are dropped when they come), for
 * a batch abandoned with its connection. */
void outbox_batch_forget(struct outbox_batch *b, jsCtx *js);

/* Feeds the stream sequences of the batch's fresh (not duplicate) PubAcks to acks, in the order the
 * rows were published, so that the caller sees a stream that went back while it published. */
void outbox_batch_scan_acks(struct outbox_batch *b, struct watch_acks *acks);

/* Marks exactly the acknowledged rows published (the stream sequence of each PubAck, the time)
 * and commits, in one round trip that PostgreSQL works on while the caller publishes; with limit > 0 the same round trip opens the next transaction and
 * starts a claim of up to limit rows after the id after (as outbox_batch_claim_send()) into b,
 * which is reused. *done gets the counts of the batch being committed. Collect with
 * outbox_batch_collect(). Returns 0, or -1 with err filled when it could not even be sent (the
 * transaction is rolled back; the rows stay). */
int outbox_batch_commit_send(struct outbox_batch *b, PGconn *conn, long limit, int64_t after,
    struct batch_result *done, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Rolls the transaction back (the rows stay waiting, nothing is marked). */
void outbox_batch_rollback(struct outbox_batch *b, PGconn *conn);

/* The counts of the last batch. */
void outbox_batch_result(struct outbox_batch *b, struct batch_result *out);

/* The number of header bytes a row's message carries on the wire (NATS/1.0 block). */
size_t outbox_message_header_bytes(size_t traceparent_len);

#endif
