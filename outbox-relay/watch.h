/* The stream watch: from what the relay knew of USER_EVENTS and what it sees now, decides whether
 * the stream lost events it had acknowledged, which kept rows go out again, and what is lost for
 * good. Pure logic: the relay reads the stream and PostgreSQL, this decides. */
#ifndef RELAY_WATCH_H
#define RELAY_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The fresh (not duplicate) PubAcks of the relay, in the order it published: JetStream numbers
 * new messages upwards, so a fresh sequence at or below one acknowledged before means the stream
 * went back (restarted from a store that lost its tail, or was recreated) while the relay
 * published. */
struct watch_acks {
	uint64_t high;		/* the latest fresh sequence (0: none yet) */
	uint64_t back_low;	/* 0, or the lowest fresh sequence that came at or below an earlier one */
};

/* Records one fresh PubAck's sequence. */
void watch_ack(struct watch_acks *a, uint64_t seq);

/* What the relay knew before this check. */
struct watch_known {
	bool recorded;		/* a check was recorded before (outbox_stream has the stream) */
	int64_t created_ns;	/* the stream's creation time then */
	uint64_t first_seq;	/* its first sequence then */
	uint64_t high_seq;	/* the highest sequence acknowledged: recorded, from PubAcks since, or
				 * of a kept row, whichever is highest */
	uint64_t back_to;	/* 0, or the PubAcks showed the stream went back: above this it holds
				 * nothing the relay published before (watch_acks.back_low - 1) */
};

/* What the stream looks like now. */
struct watch_seen {
	bool created_now;	/* it was missing: the relay has just created it */
	int64_t created_ns;
	uint64_t first_seq;	/* at least 1 (JetStream says 0 for a new, empty stream) */
	uint64_t last_seq;
	bool ages;		/* it has a MaxAge: old events leave it by design */
};

enum watch_reason {
	WATCH_INTACT,		/* everything acknowledged is still there */
	WATCH_MISSING,		/* the stream was gone; the relay created it again */
	WATCH_RECREATED,	/* the stream was deleted and created again (its creation time changed) */
	WATCH_WENT_BACK,	/* it holds less than was acknowledged: its last sequence went back */
	WATCH_PURGED,		/* its first sequence moved up: events were removed from its start */
};

/* What to do. Kept rows are selected by the stream sequence of their PubAck. */
struct watch_verdict {
	enum watch_reason reason;
	bool restore_all;	/* publish every kept row again: they all belong to a stream that is gone */
	bool restore_above;	/* publish again the kept rows with a sequence above `above` */
	uint64_t above;
	uint64_t below;		/* publish again the kept rows with a sequence below this (the stream's
				 * first; rows that aged out under a MaxAge excepted) */
	uint64_t lost_first;	/* the sequences the stream lost, as far as the relay knows (0: none); */
	uint64_t lost_last;	/* those below the oldest kept row in that range are lost for good */
	uint64_t high_seq;	/* the highest acknowledged sequence the stream holds after this */
};

/* Decides what to do. */
void watch_judge(const struct watch_known *k, const struct watch_seen *s, struct watch_verdict *v);

/* The gap: the part of [v->lost_first, v->lost_last] below kept_min, the lowest sequence of a kept
 * row in that range (0: no kept row in it). Returns false when nothing is lost for good. */
bool watch_gap(const struct watch_verdict *v, uint64_t kept_min, uint64_t *first, uint64_t *last);

/* Why the events are restored, in words for the log: "the stream was purged: its first sequence
 * moved from 1 to 51". */
void watch_describe(const struct watch_known *k, const struct watch_seen *s,
    const struct watch_verdict *v, char *out, size_t outlen);

/* The label of a reason for relay_stream_restores_total. */
const char *watch_reason_label(enum watch_reason r);

#endif
