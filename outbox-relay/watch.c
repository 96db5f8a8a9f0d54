/* Decides whether USER_EVENTS lost acknowledged events, what to publish again, and what is lost for good. */
#include "watch.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void
watch_ack(struct watch_acks *a, uint64_t seq)
{
	if (a->high > 0 && seq <= a->high && (a->back_low == 0 || seq < a->back_low))
		a->back_low = seq;
	a->high = seq;
}

static uint64_t
min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

void
watch_judge(const struct watch_known *k, const struct watch_seen *s, struct watch_verdict *v)
{
	uint64_t known_first = k->first_seq > 0 ? k->first_seq : 1;

	memset(v, 0, sizeof(*v));
	v->high_seq = k->high_seq;
	if (s->created_now || (k->recorded && k->created_ns != s->created_ns)) {
		/* A new stream holds none of the old one's events: every kept row goes out again, and
		 * whatever the old one held below the oldest kept row is gone. */
		v->reason = s->created_now ? WATCH_MISSING : WATCH_RECREATED;
		v->restore_all = true;
		if (k->high_seq >= known_first) {
			v->lost_first = k->recorded ? known_first : 1;
			v->lost_last = k->high_seq;
		}
		v->high_seq = s->last_seq;
		return;
	}
	/* Kept rows below the first sequence are not in the stream, whatever the reason: each check
	 * looks for them (the relay leaves out those a MaxAge removed). */
	v->below = s->first_seq;
	if (s->last_seq < k->high_seq || k->back_to > 0) {
		uint64_t to = s->last_seq;

		if (k->back_to > 0 && k->back_to < to)
			to = k->back_to;
		v->reason = WATCH_WENT_BACK;
		v->restore_above = true;
		v->above = to;
		if (k->high_seq > to) {
			v->lost_first = to + 1;
			v->lost_last = k->high_seq;
		}
		v->high_seq = min_u64(k->high_seq, s->last_seq);
		return;
	}
	if (k->recorded && s->first_seq > known_first) {
		v->reason = WATCH_PURGED;
		/* Under a MaxAge the first sequence moves by design: what left before the oldest kept
		 * row cannot be told from what aged out, so no gap is claimed. */
		if (!s->ages && known_first <= k->high_seq) {
			v->lost_first = known_first;
			v->lost_last = min_u64(s->first_seq - 1, k->high_seq);
		}
	}
}

bool
watch_gap(const struct watch_verdict *v, uint64_t kept_min, uint64_t *first, uint64_t *last)
{
	if (v->lost_first == 0 || v->lost_last < v->lost_first)
		return false;
	if (kept_min < v->lost_first || kept_min > v->lost_last)
		kept_min = 0;	/* not in the range: as if there were none */
	*first = v->lost_first;
	*last = kept_min > 0 ? kept_min - 1 : v->lost_last;
	return *last >= *first;
}

void
watch_describe(const struct watch_known *k, const struct watch_seen *s,
    const struct watch_verdict *v, char *out, size_t outlen)
{
	switch (v->reason) {
	case WATCH_MISSING:
		snprintf(out, outlen, "the stream was missing (created it again)");
		break;
	case WATCH_RECREATED:
		snprintf(out, outlen, "the stream was deleted and created anew");
		break;
	case WATCH_WENT_BACK:
		snprintf(out, outlen, "the stream went back to sequence %" PRIu64 " after it had "
		    "acknowledged up to %" PRIu64, v->above, k->high_seq);
		break;
	case WATCH_PURGED:
		snprintf(out, outlen, "the stream was purged (its first sequence moved from %" PRIu64
		    " to %" PRIu64 ")", k->first_seq > 0 ? k->first_seq : 1, s->first_seq);
		break;
	case WATCH_INTACT:
		snprintf(out, outlen, "the stream was purged (it no longer holds the events below its "
		    "first sequence %" PRIu64 ")", s->first_seq);
		break;
	}
}

const char *
watch_reason_label(enum watch_reason r)
{
	switch (r) {
	case WATCH_MISSING:
		return "missing";
	case WATCH_RECREATED:
		return "recreated";
	case WATCH_WENT_BACK:
		return "went_back";
	case WATCH_PURGED:
	case WATCH_INTACT:
		break;
	}
	return "purged";
}
