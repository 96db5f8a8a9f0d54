/* Unit tests of what bounds slow and greedy HTTP clients: the request deadline's bookkeeping
 * (common/http_deadline.h) and the token buckets per address (common/ratelimit.h). */
#include <stdint.h>
#include <stdlib.h>

#include "http_deadline.h"
#include "ratelimit.h"
#include "unit.h"

struct cuts {
	int n;
	int fds[8];
	enum http_phase phases[8];
};

static void
record_cut(void *arg, int fd, enum http_phase phase)
{
	struct cuts *c = arg;

	if (c->n < 8) {
		c->fds[c->n] = fd;
		c->phases[c->n] = phase;
	}
	c->n++;
}

static struct cuts
sweep(struct http_deadlines *d, int64_t now)
{
	struct cuts c = { 0 };

	http_deadlines_sweep(d, now, record_cut, &c);
	return c;
}

/* A trickle of headers is cut at the deadline counted from the connection's opening, however
 * often bytes arrive: no progress call moves it. */
static void
test_headers_are_due_from_the_opening(void)
{
	struct http_deadlines *d = http_deadlines_new(10000, 31000);
	struct http_conn_deadline *c = http_deadline_open(d, 7, 1000);
	struct cuts got;

	http_deadline_request_line(c, 9000);	/* the first request line does not restart it */
	CHECK(sweep(d, 11000).n == 0);
	got = sweep(d, 11001);
	CHECK(got.n == 1 && got.fds[0] == 7 && got.phases[0] == HTTP_PHASE_HEADERS);
	CHECK(sweep(d, 20000).n == 0);		/* cut once */
	CHECK(http_deadline_headers(c, 11002) == HTTP_DEADLINE_CUT);
	CHECK(!http_deadline_body_done(c));
	http_deadline_close(c);
	http_deadlines_free(d);
}

/* A body that trickles is cut with the phase "body"; a whole request is never cut, however long
 * it is handled or suspended. */
static void
test_body_and_handling(void)
{
	struct http_deadlines *d = http_deadlines_new(10000, 31000);
	struct http_conn_deadline *slow = http_deadline_open(d, 3, 0);
	struct http_conn_deadline *waits = http_deadline_open(d, 4, 0);
	struct cuts got;

	CHECK(http_deadline_headers(slow, 500) == HTTP_DEADLINE_IN_TIME);
	CHECK(http_deadline_headers(waits, 500) == HTTP_DEADLINE_IN_TIME);
	CHECK(http_deadline_body_done(waits));
	got = sweep(d, 10001);
	CHECK(got.n == 1 && got.fds[0] == 3 && got.phases[0] == HTTP_PHASE_BODY);
	CHECK(!http_deadline_body_done(slow));	/* the sweep won the race: close it */
	CHECK(sweep(d, 3600000).n == 0);	/* the suspended read waits on */
	http_deadline_close(slow);
	http_deadline_close(waits);
	http_deadlines_free(d);
}

/* Headers that arrive after the deadline, before a sweep saw them: the caller answers 408. */
static void
test_late_headers(void)
{
	struct http_deadlines *d = http_deadlines_new(10000, 31000);
	struct http_conn_deadline *c = http_deadline_open(d, 5, 0);

	CHECK(http_deadline_headers(c, 10001) == HTTP_DEADLINE_LATE);
	CHECK(sweep(d, 10002).n == 0);		/* counted once, by the caller */
	CHECK(!http_deadline_body_done(c));
	http_deadlines_free(d);			/* frees what is still open */
}

/* After an answer a kept-alive connection may wait wait_ms for its next request line, which then
 * has request_ms for the rest; without a request line it is cut in the phase "waiting". */
static void
test_kept_alive(void)
{
	struct http_deadlines *d = http_deadlines_new(10000, 31000);
	struct http_conn_deadline *c = http_deadline_open(d, 9, 0);
	struct http_conn_deadline *idle = http_deadline_open(d, 10, 0);
	struct cuts got;

	CHECK(http_deadline_headers(c, 100) == HTTP_DEADLINE_IN_TIME && http_deadline_body_done(c));
	http_deadline_answered(c, 200);
	CHECK(http_deadline_headers(idle, 100) == HTTP_DEADLINE_IN_TIME &&
	    http_deadline_body_done(idle));
	http_deadline_answered(idle, 200);
	CHECK(sweep(d, 20000).n == 0);		/* waiting longer than request_ms is fine */
	http_deadline_request_line(c, 25000);
	CHECK(http_deadline_headers(c, 34000) == HTTP_DEADLINE_IN_TIME);
	got = sweep(d, 31201);
	CHECK(got.n == 1 && got.fds[0] == 10 && got.phases[0] == HTTP_PHASE_WAITING);
	got = sweep(d, 35001);
	CHECK(got.n == 1 && got.fds[0] == 9 && got.phases[0] == HTTP_PHASE_BODY);
	http_deadline_close(idle);
	http_deadline_close(c);
	http_deadlines_free(d);
}

/* Time the process did not run moves every deadline; a kept-alive connection's too. */
static void
test_postpone(void)
{
	struct http_deadlines *d = http_deadlines_new(10000, 0);
	struct http_conn_deadline *c = http_deadline_open(d, 11, 0);
	struct http_conn_deadline *idle = http_deadline_open(d, 12, 0);

	CHECK(http_deadline_headers(idle, 1) == HTTP_DEADLINE_IN_TIME && http_deadline_body_done(idle));
	http_deadline_answered(idle, 2);	/* wait_ms 0: no limit for the next request line */
	http_deadlines_postpone(d, 5000);
	CHECK(sweep(d, 15000).n == 0);
	CHECK(sweep(d, 15001).n == 1);
	CHECK(sweep(d, 86400000).n == 0);
	http_deadlines_free(d);
	(void)c;
}

static void
test_null_deadline_is_a_no_op(void)
{
	http_deadline_request_line(NULL, 0);
	CHECK(http_deadline_headers(NULL, 0) == HTTP_DEADLINE_IN_TIME);
	CHECK(http_deadline_body_done(NULL));
	http_deadline_answered(NULL, 0);
	http_deadline_close(NULL);
}

/* 10 a second with a burst of 3: three at once, then one every 100 ms; Retry-After in whole
 * seconds, at least 1; another address has its own bucket. */
static void
test_token_bucket(void)
{
	struct ratelimit *r = ratelimit_new(10, 3);
	uint32_t a = 0x7f000001, b = 0x7f000002;
	long retry = 0;

	for (int i = 0; i < 3; i++)
		CHECK(ratelimit_take(r, a, 1000, &retry));
	CHECK(!ratelimit_take(r, a, 1000, &retry) && retry == 1);
	CHECK(ratelimit_take(r, b, 1000, &retry));
	CHECK(ratelimit_take(r, a, 1100, &retry));
	CHECK(!ratelimit_take(r, a, 1150, &retry));
	CHECK(ratelimit_take(r, a, 1200, &retry));
	/* A pause refills up to the burst, not beyond. */
	for (int i = 0; i < 3; i++)
		CHECK(ratelimit_take(r, a, 60000, &retry));
	CHECK(!ratelimit_take(r, a, 60000, &retry));
	ratelimit_free(r);

	/* 1 every 10 s: the wait is rounded up to whole seconds. */
	r = ratelimit_new(1, 1);
	CHECK(ratelimit_take(r, a, 5000, &retry));
	CHECK(!ratelimit_take(r, a, 5001, &retry) && retry == 1);
	ratelimit_free(r);
}

/* Far more new addresses than slots, one millisecond per 64 of them: the busiest address, which
 * asks every millisecond, keeps its bucket (it is never the one used the longest ago), so it is
 * refused but for what its rate refills (1 a second: 2 or 3 in the 2.6 s); were it forgotten, it
 * would come back with a full bucket again and again. */
static void
test_table_is_bounded(void)
{
	struct ratelimit *r = ratelimit_new(1, 2);
	uint32_t busy = 0x0a000001;
	long retry = 0;
	int allowed = 0;

	CHECK(ratelimit_take(r, busy, 1000, &retry) && ratelimit_take(r, busy, 1000, &retry));
	for (uint32_t i = 0; i < 20 * RATELIMIT_SLOTS; i++) {
		int64_t now = 1000 + i / 64;

		if (!ratelimit_take(r, 0xc0000000u + i, now, &retry))
			allowed = -1000;	/* a new address starts with a full bucket */
		if (i % 64 == 0 && ratelimit_take(r, busy, now, &retry))
			allowed++;
	}
	CHECK(allowed >= 0 && allowed <= 3);
	ratelimit_free(r);
}

int
main(void)
{
	test_headers_are_due_from_the_opening();
	test_body_and_handling();
	test_late_headers();
	test_kept_alive();
	test_postpone();
	test_null_deadline_is_a_no_op();
	test_token_bucket();
	test_table_is_bounded();
	return unit_report("common_http_limits");
}
