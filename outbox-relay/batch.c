/* Relays one batch of committed outbox rows to JetStream; a row is marked published only after its PubAck. */
#include "batch.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pg.h"
#include "util.h"

enum row_state { ROW_PENDING, ROW_ACKED, ROW_FAILED, ROW_DEAD };

struct outbox_row {
	const char *id;		/* bigint as text; these point into the claim's PGresult */
	const char *event_id;
	const char *subject;
	const char *traceparent;	/* NULL when the row carries none */
	const char *body;
	int body_len;
	enum row_state state;
	uint64_t seq;		/* the stream sequence of its positive PubAck */
	bool duplicate;		/* that PubAck said the stream had it already */
};

struct outbox_batch {
	pthread_mutex_t mu;	/* guards rows[].state, the counts and error: PubAcks arrive on
				 * the library's thread */
	PGresult *res;
	struct outbox_row *rows;
	size_t n, cap;
	size_t hint;		/* where the next PubAck is looked for: they arrive in order */
	size_t acked, duplicates, failed, dead;
	char error[256];
	int js_error;		/* the JetStream error code of the first negative PubAck, or 0 */
	/* What the round trip in flight on the connection carries, until its answer is read. */
	bool commit_sent;	/* the marking and COMMIT of the batch before */
	bool claim_sent;	/* BEGIN and the claim */
	size_t sent;		/* messages handed to the library by the last send */
	int64_t start_ms;	/* when the first message of the batch was published */
	int64_t last_ack_ms;	/* when the last PubAck (or failure) came */
	double publish_seconds;
	size_t dead_idx[64];	/* rows moved by the last bury, for the caller's log lines */
	size_t ndead_idx;
};

/* Opens the transaction and claims in one round trip (simple query protocol: two statements,
 * integers only in the text). The JetStream body is built in PostgreSQL, so that the relay only
 * moves bytes. Only waiting rows (published_at IS NULL) are claimed, through the partial index
 * that holds them alone, however many published rows are kept. The %s is empty or a lower bound
 * on the id (see outbox_batch_claim_send()). */
#define CLAIM_SQL \
    "BEGIN; SELECT id, event_id::text, subject, headers->>'traceparent', " \
    "json_build_object('type', event_type, 'event_id', event_id, 'schema_version', schema_version, " \
    "'occurred_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), " \
    "'payload', payload)::text " \
    "FROM outbox WHERE published_at IS NULL%s ORDER BY id LIMIT %ld FOR UPDATE SKIP LOCKED"

static const char bury_sql[] =
    "WITH d AS (DELETE FROM outbox WHERE id = $1 RETURNING *) "
    "INSERT INTO outbox_dead (id, event_id, aggregate_id, event_type, version, subject, headers, "
    "payload, created_at, reason, schema_version) "
    "SELECT id, event_id, aggregate_id, event_type, version, subject, headers, payload, "
    "created_at, $2, schema_version FROM d";

struct outbox_batch *
outbox_batch_new(void)
{
	struct outbox_batch *b = calloc(1, sizeof(*b));

	if (b == NULL)
		return NULL;
	pthread_mutex_init(&b->mu, NULL);
	return b;
}

static void
batch_reset(struct outbox_batch *b)
{
	pthread_mutex_lock(&b->mu);
	PQclear(b->res);
	b->res = NULL;
	b->n = 0;
	b->hint = 0;
	b->acked = b->duplicates = b->failed = b->dead = 0;
	b->error[0] = '\0';
	b->js_error = 0;
	b->commit_sent = b->claim_sent = false;
	b->sent = 0;
	b->start_ms = b->last_ack_ms = 0;
	b->publish_seconds = 0;
	b->ndead_idx = 0;
	pthread_mutex_unlock(&b->mu);
}

void
outbox_batch_free(struct outbox_batch *b)
{
	if (b == NULL)
		return;
	batch_reset(b);
	free(b->rows);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

/* Keeps the first failure of the batch; the caller holds b->mu. */
static void
note_publish_error(struct outbox_batch *b, const char *subject, const char *event_id,
    const char *why)
{
	if (b->error[0] == '\0')
		snprintf(b->error, sizeof(b->error), "could not publish \"%s\" event %s: %s", subject,
		    event_id, why);
}

/* Called by the library for every PubAck, negative ack or timeout. */
static void
on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	struct outbox_batch *b = closure;
	const char *event_id = NULL;
	char why[160];

	(void)js;
	if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &event_id) != NATS_OK)
		event_id = NULL;
	pthread_mutex_lock(&b->mu);
	for (size_t k = 0; event_id != NULL && k < b->n; k++) {
		size_t i = (b->hint + k) % b->n;
		struct outbox_row *r = &b->rows[i];

		if (strcmp(r->event_id, event_id) != 0)
			continue;
		b->hint = i + 1;
		if (r->state != ROW_PENDING)
			break;
		b->last_ack_ms = mono_ms();
		if (pa != NULL) {
			/* A duplicate is a positive answer too: the stream has the event, at the
			 * sequence the PubAck names. */
			r->state = ROW_ACKED;
			r->seq = pa->Sequence;
			r->duplicate = pa->Duplicate;
			b->acked++;
			if (pa->Duplicate)
				b->duplicates++;
		} else {
			r->state = ROW_FAILED;
			b->failed++;
			if (pae != NULL && b->js_error == 0)
				b->js_error = (int)pae->ErrCode;
			if (pae != NULL && pae->Err == NATS_TIMEOUT)
				snprintf(why, sizeof(why), "no PubAck in time");
			else if (pae != NULL)
				snprintf(why, sizeof(why), "%s (JetStream error %d)",
				    pae->ErrText && *pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err),
				    (int)pae->ErrCode);
			else
				snprintf(why, sizeof(why), "no answer");
			note_publish_error(b, r->subject, event_id, why);
		}
		break;
	}
	pthread_mutex_unlock(&b->mu);
	natsMsg_Destroy(msg);
}

void
outbox_batch_js_options(struct outbox_batch *b, jsOptions *opts)
{
	opts->PublishAsync.AckHandler = on_puback;
	opts->PublishAsync.AckHandlerClosure = b;
}

/* The claim's extra condition: rows after the id after, or every waiting row (after 0). */
static void
claim_where(char *where, size_t size, int64_t after)
{
	where[0] = '\0';
	if (after > 0)
		snprintf(where, size, " AND id > %lld", (long long)after);
}

int
outbox_batch_claim_send(struct outbox_batch *b, PGconn *conn, long limit, int64_t after,
    char *err, size_t errlen)
{
	char where[48], sql[sizeof(CLAIM_SQL) + 96], msg[256];

	/* A claim starts its own transaction. One still open here would be a batch left behind by
	 * a bug: BEGIN would only warn and the claim would join it. End it, and say so. */
	if (PQtransactionStatus(conn) == PQTRANS_INTRANS ||
	    PQtransactionStatus(conn) == PQTRANS_INERROR) {
		log_error("a transaction was still open on a work connection before a claim; rolled "
		    "it back (its rows stay in the outbox)");
		outbox_batch_rollback(b, conn);
	}
	batch_reset(b);
	claim_where(where, sizeof(where), after);
	snprintf(sql, sizeof(sql), CLAIM_SQL, where, limit);
	if (!PQsendQuery(conn, sql)) {
		pg_error_text(conn, NULL, msg, sizeof(msg));
		snprintf(err, errlen, "could not claim outbox rows: %s", msg);
		outbox_batch_rollback(b, conn);
		return -1;
	}
	b->claim_sent = true;
	return 0;
}

long
outbox_batch_collect(struct outbox_batch *b, PGconn *conn, enum batch_commit *commit, char *err,
    size_t errlen)
{
	PGresult *r, *rows = NULL;
	bool committing = b->commit_sent, claiming = b->claim_sent;
	char msg[256];
	size_t n;

	/* The commit's results first, if one was sent (up to COMMIT's), then BEGIN's, the rows, and
	 * NULL; the first error wins, and PostgreSQL skips the statements after it. */
	b->commit_sent = b->claim_sent = false;
	*commit = committing ? BATCH_COMMIT_FAILED : BATCH_COMMIT_NONE;
	msg[0] = '\0';
	while ((r = PQgetResult(conn)) != NULL) {
		ExecStatusType st = PQresultStatus(r);

		if (committing) {
			if (st == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0) {
				committing = false;
				*commit = BATCH_COMMITTED;
			} else if (st == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "ROLLBACK") == 0) {
				snprintf(msg, sizeof(msg), "the transaction was rolled back");
			} else if (st != PGRES_COMMAND_OK && msg[0] == '\0') {
				pg_error_text(conn, r, msg, sizeof(msg));
			}
			PQclear(r);
			continue;
		}
		if (st == PGRES_TUPLES_OK && rows == NULL && msg[0] == '\0') {
			rows = r;
			continue;
		}
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && msg[0] == '\0')
			pg_error_text(conn, r, msg, sizeof(msg));
		PQclear(r);
	}
	if (committing) {
		snprintf(err, errlen, "could not commit the batch: %s", msg[0] ? msg : "no answer");
		PQclear(rows);
		outbox_batch_rollback(b, conn);
		return -1;
	}
	if (!claiming) {
		if (msg[0] == '\0')
			return 0;
		snprintf(err, errlen, "could not commit the batch: %s", msg);
		outbox_batch_rollback(b, conn);
		return -1;
	}
	if (rows == NULL && msg[0] == '\0')
		pg_error_text(conn, NULL, msg, sizeof(msg));
	if (msg[0] != '\0') {
		snprintf(err, errlen, "could not claim outbox rows: %s", msg);
		PQclear(rows);
		outbox_batch_rollback(b, conn);
		return -1;
	}
	n = (size_t)PQntuples(rows);
	if (n > b->cap) {
		struct outbox_row *more = realloc(b->rows, n * sizeof(*more));

		if (more == NULL) {
			snprintf(err, errlen, "could not claim outbox rows: out of memory");
			PQclear(rows);
			outbox_batch_rollback(b, conn);
			return -1;
		}
		b->rows = more;
		b->cap = n;
	}
	pthread_mutex_lock(&b->mu);
	b->res = rows;
	for (size_t i = 0; i < n; i++) {
		struct outbox_row *row = &b->rows[i];

		row->id = PQgetvalue(rows, (int)i, 0);
		row->event_id = PQgetvalue(rows, (int)i, 1);
		row->subject = PQgetvalue(rows, (int)i, 2);
		row->traceparent = PQgetisnull(rows, (int)i, 3) ? NULL : PQgetvalue(rows, (int)i, 3);
		row->body = PQgetvalue(rows, (int)i, 4);
		row->body_len = PQgetlength(rows, (int)i, 4);
		row->state = ROW_PENDING;
	}
	b->n = n;
	pthread_mutex_unlock(&b->mu);
	return (long)n;
}

int64_t
outbox_batch_last_id(const struct outbox_batch *b)
{
	return b->n > 0 ? strtoll(b->rows[b->n - 1].id, NULL, 10) : 0;
}

size_t
outbox_message_header_bytes(size_t traceparent_len)
{
	/* "NATS/1.0\r\n", one "Key: value\r\n" per header, and the blank line. */
	size_t n = 10 + strlen("Nats-Msg-Id: ") + 36 + 2 + strlen("Content-Type: application/json") + 2;

	if (traceparent_len > 0)
		n += strlen("traceparent: ") + traceparent_len + 2;
	return n + 2;
}

long
outbox_batch_bury(struct outbox_batch *b, PGconn *conn, int64_t max_payload, char *err,
    size_t errlen)
{
	char reason[128], msg[256];
	long moved = 0;

	b->ndead_idx = 0;
	for (size_t i = 0; i < b->n; i++) {
		struct outbox_row *row = &b->rows[i];
		size_t size = outbox_message_header_bytes(row->traceparent ? strlen(row->traceparent) : 0) +
		    (size_t)row->body_len;
		const char *params[2];
		PGresult *r;

		if (max_payload <= 0 || (int64_t)size <= max_payload)
			continue;
		snprintf(reason, sizeof(reason), "message of %zu bytes is over the server's maximum "
		    "payload of %lld bytes", size, (long long)max_payload);
		params[0] = row->id;
		params[1] = reason;
		r = PQexecParams(conn, bury_sql, 2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			pg_error_text(conn, r, msg, sizeof(msg));
			snprintf(err, errlen, "could not move event %s to outbox_dead: %s", row->event_id,
			    msg);
			PQclear(r);
			return -1;
		}
		PQclear(r);
		pthread_mutex_lock(&b->mu);
		row->state = ROW_DEAD;
		b->dead++;
		pthread_mutex_unlock(&b->mu);
		if (b->ndead_idx < ARRAY_SIZE(b->dead_idx))
			b->dead_idx[b->ndead_idx++] = i;
		moved++;
	}
	return moved;
}

const char *
outbox_batch_dead_id(const struct outbox_batch *b, size_t i, const char **subject, size_t *bytes)
{
	const struct outbox_row *row;

	if (i >= b->ndead_idx)
		return NULL;
	row = &b->rows[b->dead_idx[i]];
	*subject = row->subject;
	*bytes = (size_t)row->body_len;
	return row->event_id;
}

static natsStatus
row_message(const struct outbox_row *row, natsMsg **out)
{
	natsMsg *m = NULL;
	natsStatus s;

	s = natsMsg_Create(&m, row->subject, NULL, row->body, row->body_len);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, "Nats-Msg-Id", row->event_id);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, "Content-Type", "application/json");
	if (s == NATS_OK && row->traceparent != NULL && *row->traceparent != '\0')
		s = natsMsgHeader_Set(m, "traceparent", row->traceparent);
	if (s != NATS_OK) {
		natsMsg_Destroy(m);
		return s;
	}
	*out = m;
	return NATS_OK;
}

void
outbox_batch_send(struct outbox_batch *b, jsCtx *js, long timeout_ms)
{
	jsPubOptions po;
	natsStatus s = NATS_OK;
	size_t sent = 0;

	jsPubOptions_Init(&po);
	po.MaxWait = timeout_ms;
	b->start_ms = mono_ms();
	for (size_t i = 0; i < b->n; i++) {
		struct outbox_row *row = &b->rows[i];
		natsMsg *m = NULL;

		if (row->state != ROW_PENDING)
			continue;
		s = row_message(row, &m);
		if (s == NATS_OK)
			s = js_PublishMsgAsync(js, &m, &po);
		natsMsg_Destroy(m);	/* a no-op when the library took it */
		if (s != NATS_OK) {
			pthread_mutex_lock(&b->mu);
			note_publish_error(b, row->subject, row->event_id,
			    natsStatus_GetText(s));
			pthread_mutex_unlock(&b->mu);
			break;
		}
		sent++;
	}
	b->sent = sent;
}

int
outbox_batch_await(struct outbox_batch *b, jsCtx *js, long timeout_ms, char *err, size_t errlen)
{
	jsPubOptions wait;
	int rc;

	if (b->sent > 0) {
		/* Every publish carries MaxWait, so the library times each one out itself; the margin
		 * only guards against a stuck library. */
		jsPubOptions_Init(&wait);
		wait.MaxWait = timeout_ms + 2000;
		if (js_PublishAsyncComplete(js, &wait) != NATS_OK)
			outbox_batch_forget(b, js);
	}
	pthread_mutex_lock(&b->mu);
	b->publish_seconds = (double)((b->acked + b->dead == b->n && b->last_ack_ms > 0 ?
	    b->last_ack_ms : mono_ms()) - b->start_ms) / 1000.0;
	rc = (b->acked + b->dead == b->n && b->error[0] == '\0') ? 0 : -1;
	if (rc != 0) {
		if (b->error[0] != '\0')
			snprintf(err, errlen, "%s", b->error);
		else
			snprintf(err, errlen, "could not publish %zu of %zu events: no PubAck",
			    b->n - b->acked - b->dead, b->n);
	}
	pthread_mutex_unlock(&b->mu);
	return rc;
}

void
outbox_batch_forget(struct outbox_batch *b, jsCtx *js)
{
	natsMsgList pending;

	(void)b;
	/* Their PubAcks, if any still come, are dropped by the library from now on. */
	if (js_PublishAsyncGetPendingList(&pending, js) == NATS_OK)
		natsMsgList_Destroy(&pending);
}

/* The statement that marks exactly the acknowledged rows published, each with the stream
 * sequence of its PubAck, as two PostgreSQL array literals of the same length; the caller
 * free()s it. */
static char *
mark_sql(struct outbox_batch *b)
{
	static const char head[] = "UPDATE outbox AS o SET published_seq = a.seq, "
	    "published_at = statement_timestamp() FROM unnest('{";
	static const char mid[] = "}'::bigint[], '{";
	static const char tail[] = "}'::bigint[]) AS a (id, seq) WHERE o.id = a.id";
	size_t len = sizeof(head) + sizeof(mid) + sizeof(tail), off, n = 0;
	char *sql;

	pthread_mutex_lock(&b->mu);
	for (size_t i = 0; i < b->n; i++)
		len += strlen(b->rows[i].id) + 1 + 21;
	sql = malloc(len);
	if (sql != NULL) {
		off = (size_t)sprintf(sql, "%s", head);
		for (size_t i = 0; i < b->n; i++) {
			if (b->rows[i].state == ROW_ACKED)
				off += (size_t)sprintf(sql + off, "%s%s", n++ > 0 ? "," : "", b->rows[i].id);
		}
		off += (size_t)sprintf(sql + off, "%s", mid);
		n = 0;
		for (size_t i = 0; i < b->n; i++) {
			if (b->rows[i].state == ROW_ACKED)
				off += (size_t)sprintf(sql + off, "%s%" PRIu64, n++ > 0 ? "," : "",
				    b->rows[i].seq);
		}
		sprintf(sql + off, "%s", tail);
	}
	pthread_mutex_unlock(&b->mu);
	return sql;
}

void
outbox_batch_scan_acks(struct outbox_batch *b, struct watch_acks *acks)
{
	pthread_mutex_lock(&b->mu);
	for (size_t i = 0; i < b->n; i++) {
		if (b->rows[i].state == ROW_ACKED && !b->rows[i].duplicate)
			watch_ack(acks, b->rows[i].seq);
	}
	pthread_mutex_unlock(&b->mu);
}

int
outbox_batch_commit_send(struct outbox_batch *b, PGconn *conn, long limit, int64_t after,
    struct batch_result *done, char *err, size_t errlen)
{
	char *mark = NULL, *sql = NULL, where[48], msg[256];
	size_t len, cap;

	if ((mark = mark_sql(b)) == NULL) {
		snprintf(err, errlen, "could not commit the batch: out of memory");
		goto fail;
	}
	claim_where(where, sizeof(where), after);
	cap = strlen(mark) + sizeof(CLAIM_SQL) + 160;
	if ((sql = malloc(cap)) == NULL) {
		snprintf(err, errlen, "could not commit the batch: out of memory");
		goto fail;
	}
	/* The ids are integers that PostgreSQL itself returned, the sequences integers: safe to
	 * write into the text. */
	len = (size_t)snprintf(sql, cap, "%s; COMMIT", mark);
	if (limit > 0)
		snprintf(sql + len, cap - len, "; " CLAIM_SQL, where, limit);
	outbox_batch_result(b, done);
	batch_reset(b);
	if (!PQsendQuery(conn, sql)) {
		pg_error_text(conn, NULL, msg, sizeof(msg));
		snprintf(err, errlen, "could not commit the batch: %s", msg);
		goto fail;
	}
	b->commit_sent = true;
	b->claim_sent = limit > 0;
	free(sql);
	free(mark);
	return 0;
fail:
	free(sql);
	free(mark);
	outbox_batch_rollback(b, conn);
	return -1;
}

void
outbox_batch_rollback(struct outbox_batch *b, PGconn *conn)
{
	(void)b;
	if (conn != NULL && PQstatus(conn) == CONNECTION_OK &&
	    PQtransactionStatus(conn) != PQTRANS_IDLE)
		PQclear(PQexec(conn, "ROLLBACK"));
}

void
outbox_batch_result(struct outbox_batch *b, struct batch_result *out)
{
	pthread_mutex_lock(&b->mu);
	out->claimed = b->n;
	out->acked = b->acked;
	out->duplicates = b->duplicates;
	out->failed = b->n - b->acked - b->dead;
	out->dead = b->dead;
	out->publish_seconds = b->publish_seconds;
	out->js_error = b->js_error;
	pthread_mutex_unlock(&b->mu);
}
