/* Unit tests of the stream watch: when the stream lost acknowledged events, what goes out again, and what is a gap. */
#include <string.h>

#include "../../outbox-relay/watch.h"
#include "unit.h"

static struct watch_known
known(uint64_t first, uint64_t high)
{
	struct watch_known k;

	memset(&k, 0, sizeof(k));
	k.recorded = true;
	k.created_ns = 1000;
	k.first_seq = first;
	k.high_seq = high;
	return k;
}

static struct watch_seen
seen(uint64_t first, uint64_t last)
{
	struct watch_seen s;

	memset(&s, 0, sizeof(s));
	s.created_ns = 1000;
	s.first_seq = first;
	s.last_seq = last;
	return s;
}

static void
test_acks(void)
{
	struct watch_acks a;

	/* In order: nothing to say. */
	memset(&a, 0, sizeof(a));
	watch_ack(&a, 101);
	watch_ack(&a, 102);
	CHECK(a.high == 102 && a.back_low == 0);

	/* The stream restarted from a store that ended at 95: 96 comes again after 105. */
	memset(&a, 0, sizeof(a));
	a.high = 100;
	for (uint64_t s = 101; s <= 105; s++)
		watch_ack(&a, s);
	for (uint64_t s = 96; s <= 100; s++)
		watch_ack(&a, s);
	CHECK(a.back_low == 96 && a.high == 100);

	/* Between two batches: the first fresh sequence of the next is already at or below. */
	memset(&a, 0, sizeof(a));
	a.high = 100;
	watch_ack(&a, 100);
	CHECK(a.back_low == 100);
	watch_ack(&a, 42);
	CHECK(a.back_low == 42 && a.high == 42);

	/* A relay that knows nothing yet (high 0) cannot tell. */
	memset(&a, 0, sizeof(a));
	watch_ack(&a, 7);
	CHECK(a.back_low == 0 && a.high == 7);
}

static void
test_intact(void)
{
	struct watch_known k = known(1, 50);
	struct watch_seen s = seen(1, 60);	/* more than acknowledged: others' or copies */
	struct watch_verdict v;
	uint64_t f, l;

	watch_judge(&k, &s, &v);
	CHECK(v.reason == WATCH_INTACT);
	CHECK(!v.restore_all && !v.restore_above);
	CHECK(v.below == 1);			/* nothing below the first sequence */
	CHECK(v.high_seq == 50);
	CHECK(!watch_gap(&v, 0, &f, &l));

	/* The very first check: nothing recorded, an empty stream. */
	k = known(0, 0);
	k.recorded = false;
	s = seen(1, 0);
	watch_judge(&k, &s, &v);
	CHECK(v.reason == WATCH_INTACT && !v.restore_all && v.lost_first == 0);
}

static void
test_went_back(void)
{
	struct watch_known k = known(1, 100);
	struct watch_seen s = seen(1, 70);
	struct watch_verdict v;
	uint64_t f, l;

	watch_judge(&k, &s, &v);
	CHECK(v.reason == WATCH_WENT_BACK);
	CHECK(v.restore_above && v.above == 70);
	CHECK(v.lost_first == 71 && v.lost_last == 100);
	CHECK(v.high_seq == 70);
	/* Every lost sequence is kept: nothing lost for good. */
	CHECK(!watch_gap(&v, 71, &f, &l));
	/* Kept rows from 90 on: 71-89 are lost for good. */
	CHECK(watch_gap(&v, 90, &f, &l) && f == 71 && l == 89);
	/* No kept row at all in the range: all of it. */
	CHECK(watch_gap(&v, 0, &f, &l) && f == 71 && l == 100);

	/* The PubAcks saw it first, and new events already went past the old end: the stream's last
	 * sequence alone would not tell. */
	k = known(1, 120);
	k.back_to = 95;
	s = seen(1, 120);
	watch_judge(&k, &s, &v);
	CHECK(v.reason == WATCH_WENT_BACK && v.above == 95 && v.high_seq == 120);
	CHECK(v.lost_first == 96 && v.lost_last == 120);

	/* Both: the lower bound wins. */
	k = known(1, 120);
	k.back_to = 95;
	s = seen(1, 90);
	watch_judge(&k, &s, &v);
	CHECK(v.above == 90 && v.high_seq == 90);
}

static void
test_recreated(void)
{
	struct watch_known k = known(1, 100);
	struct watch_seen s = seen(1, 0);
	struct watch_verdict v;
	uint64_t f, l;

	s.created_ns = 2000;
	watch_judge(&k, &s, &v);
	CHECK(v.reason == WATCH_RECREATED);
	CHECK(v.restore_all && !v.restore_above);
	CHECK(v.lost_first == 1 && v.lost_last == 100 && v.high_seq == 0);
	CHECK(watch_gap(&v, 61, &f, &l) && f == 1 && l == 60);

	/* Missing: the relay created it (same creation time cannot be, but created_now decides). */
	s = seen(1, 0);
	s.created_now = true;
	watch_judge(&k, &s, &v);
	CHECK(v.reason == WATCH_MISSING && v.restore_all);

	/* Created anew and already written to: everything kept goes out again all the same. */
	s = seen(1, 500);
	s.created_ns = 3000;
	watch_judge(&k, &s, &v);
	CHECK(v.reason == WATCH_RECREATED && v.restore_all && v.high_seq == 500);

	/* A relay that never recorded the stream, and keeps nothing: no gap to claim. */
	k = known(0, 0);
	k.recorded = false;
	s = seen(1, 0);
	s.created_now = true;
	watch_judge(&k, &s, &v);
	CHECK(v.restore_all && v.lost_first == 0);
	CHECK(!watch_gap(&v, 0, &f, &l));
}

static void
test_purged(void)
{
	struct watch_known k = known(1, 100);
	struct watch_seen s = seen(101, 100);	/* a purge keeps the last sequence */
	struct watch_verdict v;
	uint64_t f, l;

	watch_judge(&k, &s, &v);
	CHECK(v.reason == WATCH_PURGED);
	CHECK(!v.restore_all && !v.restore_above && v.below == 101);
	CHECK(v.lost_first == 1 && v.lost_last == 100 && v.high_seq == 100);
	CHECK(watch_gap(&v, 41, &f, &l) && f == 1 && l == 40);
	CHECK(!watch_gap(&v, 1, &f, &l));

	/* The second look after a purge: recorded already, nothing new lost. */
	k = known(101, 100);
	watch_judge(&k, &s, &v);
	CHECK(v.reason == WATCH_INTACT && v.below == 101 && v.lost_first == 0);

	/* Under a MaxAge the first sequence moves by design: restore what is kept, claim no gap. */
	k = known(1, 100);
	s = seen(51, 100);
	s.ages = true;
	watch_judge(&k, &s, &v);
	CHECK(v.reason == WATCH_PURGED && v.below == 51 && v.lost_first == 0);
}

static void
test_describe(void)
{
	struct watch_known k = known(1, 100);
	struct watch_seen s = seen(1, 70);
	struct watch_verdict v;
	char why[256];

	watch_judge(&k, &s, &v);
	watch_describe(&k, &s, &v, why, sizeof(why));
	CHECK_STR(why, "the stream went back to sequence 70 after it had acknowledged up to 100");
	CHECK_STR(watch_reason_label(v.reason), "went_back");
	s = seen(101, 100);
	watch_judge(&k, &s, &v);
	watch_describe(&k, &s, &v, why, sizeof(why));
	CHECK_STR(why, "the stream was purged (its first sequence moved from 1 to 101)");
	k = known(101, 100);
	watch_judge(&k, &s, &v);
	watch_describe(&k, &s, &v, why, sizeof(why));
	CHECK_STR(why, "the stream was purged (it no longer holds the events below its first "
	    "sequence 101)");
	CHECK_STR(watch_reason_label(WATCH_INTACT), "purged");
}

int
main(void)
{
	test_acks();
	test_intact();
	test_went_back();
	test_recreated();
	test_purged();
	test_describe();
	return unit_report("relay_watch");
}
