/* Clocks, backoff, uuids and the shutdown flag shared by the three processes. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
rfc3339_us(int64_t us, char out[32])
{
	time_t sec = (time_t)(us / 1000000);
	struct tm tm;
	size_t n;

	gmtime_r(&sec, &tm);
	n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%06dZ", (int)(us % 1000000));
}

/* Random bytes from getrandom(2), drawn 512 at a time into a per-thread pool: a request needs 40
 * of them (an event id and a trace context), and one system call per request would cost more than
 * the rest of the work around them. The services never fork, so no two processes share a pool. */
static void
random_bytes(void *out, size_t n)
{
	static _Thread_local unsigned char pool[512];
	static _Thread_local size_t left;
	unsigned char *p = out;

	while (n > 0) {
		size_t take;

		if (left == 0) {
			size_t got = 0;

			while (got < sizeof(pool)) {
				ssize_t r = getrandom(pool + got, sizeof(pool) - got, 0);

				if (r <= 0) {
					if (r < 0 && errno == EINTR)
						continue;
					break;
				}
				got += (size_t)r;
			}
			if (got < sizeof(pool)) {
				/* getrandom cannot fail this way on Linux >= 3.17; never hand out zeros. */
				uint64_t x = (uint64_t)wall_us() ^ ((uint64_t)getpid() << 32);

				for (size_t i = got; i < sizeof(pool); i++) {
					x = x * 6364136223846793005ULL + 1442695040888963407ULL;
					pool[i] = (unsigned char)(x >> 56);
				}
			}
			left = sizeof(pool);
		}
		take = n < left ? n : left;
		memcpy(p, pool + sizeof(pool) - left, take);
		memset(pool + sizeof(pool) - left, 0, take);
		left -= take;
		p += take;
		n -= take;
	}
}

static uint64_t
random_u64(void)
{
	uint64_t v;

	random_bytes(&v, sizeof(v));
	return v;
}

void
backoff_init(struct backoff *b, long min_ms, long max_ms)
{
	b->min_ms = min_ms;
	b->max_ms = max_ms;
	b->cur_ms = min_ms;
}

long
backoff_next(struct backoff *b)
{
	long d = b->min_ms + (long)(random_u64() % (uint64_t)(b->cur_ms - b->min_ms + 1));

	b->cur_ms = b->cur_ms * 2 > b->max_ms ? b->max_ms : b->cur_ms * 2;
	return d;
}

void
backoff_reset(struct backoff *b)
{
	b->cur_ms = b->min_ms;
}

void
uuid_new(char out[37])
{
	uuid_t u;

	/* Version 4 (random), variant RFC 4122, as uuid_generate_random makes; libuuid's own draws
	 * from getrandom and reseeds random() on every call. */
	random_bytes(u, sizeof(u));
	u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
	u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
	uuid_unparse_lower(u, out);
}

bool
uuid_valid(const char *s)
{
	uuid_t u;

	return s != NULL && strlen(s) == 36 && uuid_parse(s, u) == 0;
}

static atomic_bool shutdown_flag;

static void
on_signal(int sig)
{
	(void)sig;
	atomic_store(&shutdown_flag, true);
}

void
shutdown_signals_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

bool
shutdown_requested(void)
{
	return atomic_load(&shutdown_flag);
}

void
shutdown_request(void)
{
	atomic_store(&shutdown_flag, true);
}

bool
shutdown_sleep_ms(long ms)
{
	int64_t end = mono_ms() + ms;

	while (!shutdown_requested()) {
		int64_t left = end - mono_ms();
		struct timespec ts;

		if (left <= 0)
			return false;
		if (left > 50)
			left = 50;
		ts.tv_sec = 0;
		ts.tv_nsec = left * 1000000;
		nanosleep(&ts, NULL);
	}
	return true;
}

static bool
hex_run(const char *s, size_t n)
{
	bool nonzero = false;

	for (size_t i = 0; i < n; i++) {
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return false;
		if (s[i] != '0')
			nonzero = true;
	}
	return nonzero;
}

bool
traceparent_valid(const char *s)
{
	/* version "00" - 32 hex trace id - 16 hex parent id - 2 hex flags */
	return s != NULL && strlen(s) == 55 && s[0] == '0' && s[1] == '0' && s[2] == '-' &&
	    hex_run(s + 3, 32) && s[35] == '-' && hex_run(s + 36, 16) && s[52] == '-' &&
	    isxdigit((unsigned char)s[53]) && isxdigit((unsigned char)s[54]);
}

void
traceparent_new(char out[56])
{
	uint64_t a = random_u64() | 1, b = random_u64(), c = random_u64() | 1;

	snprintf(out, 56, "00-%016llx%016llx-%016llx-01", (unsigned long long)a,
	    (unsigned long long)b, (unsigned long long)c);
}
