/* One batch of outbox rows: claimed in a transaction, published asynchronously, deleted once acked. */
#ifndef RELAY_BATCH_H
#define RELAY_BATCH_H

#include <libpq-fe.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct outbox_batch;

/* What became of one batch. */
struct batch_result {
	size_t claimed;		/* rows taken from the outbox */
	size_t acked;		/* positive PubAcks, duplicates included */
	size_t duplicates;	/* PubAcks that said the stream already had the event */
	size_t failed;		/* rows without a positive PubAck */
	size_t dead;		/* rows moved to outbox_dead */
	double publish_seconds;	/* from the first publish to the last PubAck */
};

/* Returns a new, empty batch; the caller outbox_batch_free()s it. */
struct outbox_batch *outbox_batch_new(void);
void outbox_batch_free(struct outbox_batch *b);

/* Sets the PubAck handler of opts to this batch. The JetStream context made with opts must only
 * publish through this batch, and the batch must outlive it. */
void outbox_batch_js_options(struct outbox_batch *b, jsOptions *opts);

/* Opens a transaction on conn and claims up to limit rows, oldest id first, skipping rows another
 * transaction holds. Returns the number claimed (0 leaves the transaction open too), or -1 with
 * err filled (the transaction is then rolled back). */
long outbox_batch_claim(struct outbox_batch *b, PGconn *conn, long limit, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Moves the claimed rows that the server could never accept (over max_payload bytes) to
 * outbox_dead, inside the claim's transaction. Returns how many were moved, or -1 with err filled.
 * Each moved row's event id is written to the log by the caller through outbox_batch_dead_id(). */
long outbox_batch_bury(struct outbox_batch *b, PGconn *conn, int64_t max_payload, char *err,
    size_t errlen) __attribute__((warn_unused_result));
/* The event id and subject of the i-th moved row of the last outbox_batch_bury(), or NULL. */
const char *outbox_batch_dead_id(const struct outbox_batch *b, size_t i, const char **subject,
    size_t *bytes);

/* Publishes every claimed row still pending and waits up to timeout_ms (the MaxWait of each
 * publish) for the PubAcks. Returns 0 when every row got a positive PubAck; otherwise -1 with err
 * naming the first failure. */
int outbox_batch_publish(struct outbox_batch *b, jsCtx *js, long timeout_ms, char *err,
    size_t errlen) __attribute__((warn_unused_result));

/* Deletes exactly the acknowledged rows and commits. Returns 0, or -1 with err filled (the
 * transaction is then rolled back or lost with the connection; the rows stay). */
int outbox_batch_commit(struct outbox_batch *b, PGconn *conn, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Rolls the transaction back (the rows stay, nothing is deleted). */
void outbox_batch_rollback(struct outbox_batch *b, PGconn *conn);

/* The counts of the last batch. */
void outbox_batch_result(struct outbox_batch *b, struct batch_result *out);

/* The number of header bytes a row's message carries on the wire (NATS/1.0 block). */
size_t outbox_message_header_bytes(size_t traceparent_len);

#endif
