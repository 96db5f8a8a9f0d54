/* Commit to visible, write by write: POSTs to user-api at a steady rate and, after each answer,
 * the consumer's waiting read of that user at that version (scenario 5 of bench/bench.py). */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

/*
 * Usage: e2e_probe <api-url> <consumer-url> <rate> <seconds> <tag> [threads] [wait] [every]
 *
 * Write i (0, 1, ...) is due at i / rate seconds after the start, for rate * seconds writes: a
 * POST /users of a new user (email w-<tag>-<i>@example.com) on a keep-alive connection. Its
 * answer is the commit; the Location and ETag headers name the user and its version. Every
 * <every>th write (default 1: each; 0: none, the writes alone) is then read back with
 * GET /notifications/user/{id}?min_version={version}&wait=<wait> (default 5s, the consumer's
 * cap), which the consumer answers as soon as its copy holds that version: the time from the
 * POST's answer to that answer is the write's commit to visible, as a client that reads its own
 * write sees it (one read round trip included). A 504 is a write not visible within <wait>; it
 * enters the percentiles with its time, a lower bound of its latency.
 *
 * <threads> (default 128) threads each take the next due write, send it when it is due and wait
 * for both answers, so a write starts late only when every thread is still waiting: the lateness
 * is reported (late_*), as the rate is only held while it stays small.
 *
 * Prints one JSON line.
 */

struct endpoint {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char host[96];		/* the Host header: host:port */
};

struct conn {
	const struct endpoint *ep;
	int fd;
	char buf[16384];
};

struct answer {
	int status;
	int64_t id, version;	/* from Location: /users/{id} and ETag: "{version}", or 0 */
};

struct probe {
	struct endpoint api, consumer;
	double rate, t0;
	long total, every;
	const char *tag, *wait;
	atomic_long next;
	/* Per write, milliseconds; NaN when it did not get that far. */
	double *late, *post, *visible;
	int *post_status, *get_status;
};

static int
endpoint_parse(struct endpoint *ep, const char *url)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	char host[64], port[16];
	const char *p = url, *colon, *end;

	if (strncmp(p, "http://", 7) == 0)
		p += 7;
	colon = strrchr(p, ':');
	if (colon == NULL || (size_t)(colon - p) >= sizeof(host))
		return -1;
	end = colon + 1 + strcspn(colon + 1, "/");
	if ((size_t)(end - colon - 1) >= sizeof(port))
		return -1;
	memcpy(host, p, (size_t)(colon - p));
	host[colon - p] = '\0';
	memcpy(port, colon + 1, (size_t)(end - colon - 1));
	port[end - colon - 1] = '\0';
	if (getaddrinfo(host, port, &hints, &ai) != 0)
		return -1;
	memcpy(&ep->addr, ai->ai_addr, ai->ai_addrlen);
	ep->addrlen = ai->ai_addrlen;
	snprintf(ep->host, sizeof(ep->host), "%s:%s", host, port);
	freeaddrinfo(ai);
	return 0;
}

static int
conn_open(struct conn *c)
{
	int one = 1;

	c->fd = socket(c->ep->addr.ss_family, SOCK_STREAM, 0);
	if (c->fd < 0)
		return -1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (const struct sockaddr *)&c->ep->addr, c->ep->addrlen) != 0) {
		close(c->fd);
		c->fd = -1;
		return -1;
	}
	return 0;
}

static void
conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* The value of header name in the block hdrs (NUL-terminated), copied into out; false when the
 * header is missing. */
static bool
header_value(const char *hdrs, const char *name, char *out, size_t outlen)
{
	size_t n = strlen(name);

	for (const char *l = strstr(hdrs, "\r\n"); l != NULL; l = strstr(l + 2, "\r\n")) {
		const char *v = l + 2;
		size_t len;

		if (strncasecmp(v, name, n) != 0 || v[n] != ':')
			continue;
		v += n + 1;
		v += strspn(v, " \t");
		len = strcspn(v, "\r");
		if (len >= outlen)
			len = outlen - 1;
		memcpy(out, v, len);
		out[len] = '\0';
		return true;
	}
	return false;
}

/* Sends req and reads one answer on c (opened when it is not). The server closing a kept-alive
 * connection before any byte of the answer is not retried: a POST may have been taken. */
static int
conn_exchange(struct conn *c, const char *req, size_t reqlen, struct answer *a)
{
	size_t have = 0, need = 0;
	char *hend = NULL, value[64];
	ssize_t r;

	memset(a, 0, sizeof(*a));
	if (c->fd < 0 && conn_open(c) != 0)
		return -1;
	for (size_t off = 0; off < reqlen; off += (size_t)r) {
		r = send(c->fd, req + off, reqlen - off, MSG_NOSIGNAL);
		if (r <= 0)
			goto fail;
	}
	for (;;) {
		r = recv(c->fd, c->buf + have, sizeof(c->buf) - 1 - have, 0);
		if (r <= 0)
			goto fail;
		have += (size_t)r;
		c->buf[have] = '\0';
		if (hend == NULL && (hend = strstr(c->buf, "\r\n\r\n")) != NULL) {
			*hend = '\0';
			need = (size_t)(hend - c->buf) + 4;
			if (header_value(c->buf, "Content-Length", value, sizeof(value)))
				need += strtoul(value, NULL, 10);
		}
		if (hend != NULL && have >= need)
			break;
		if (have == sizeof(c->buf) - 1)
			goto fail;
	}
	if (sscanf(c->buf, "HTTP/1.%*d %d", &a->status) != 1)
		goto fail;
	if (header_value(c->buf, "Location", value, sizeof(value)) &&
	    strncmp(value, "/users/", 7) == 0)
		a->id = strtoll(value + 7, NULL, 10);
	if (header_value(c->buf, "ETag", value, sizeof(value)))
		a->version = strtoll(value + (value[0] == '"'), NULL, 10);
	if (header_value(c->buf, "Connection", value, sizeof(value)) &&
	    strcasecmp(value, "close") == 0)
		conn_close(c);
	return 0;
fail:
	conn_close(c);
	return -1;
}

static void
sleep_until(double t)
{
	struct timespec ts;

	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void *
probe_run(void *arg)
{
	struct probe *p = arg;
	struct conn api = { .ep = &p->api, .fd = -1 }, cons = { .ep = &p->consumer, .fd = -1 };
	char req[512], body[160];
	struct answer a;
	long i;

	while ((i = atomic_fetch_add(&p->next, 1)) < p->total) {
		double due = p->t0 + (double)i / p->rate, t1, t2, t3;
		int n, blen;

		sleep_until(due);
		t1 = now_s();
		p->late[i] = (t1 - due) * 1e3;
		blen = snprintf(body, sizeof(body), "{\"name\": \"E2E User %ld\", \"email\": "
		    "\"w-%s-%ld@example.com\"}", i, p->tag, i);
		n = snprintf(req, sizeof(req), "POST /users HTTP/1.1\r\nHost: %s\r\n"
		    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		    p->api.host, blen, body);
		if (conn_exchange(&api, req, (size_t)n, &a) != 0)
			continue;
		t2 = now_s();
		p->post[i] = (t2 - t1) * 1e3;
		p->post_status[i] = a.status;
		if (a.status != 201 || a.id <= 0 || a.version <= 0 || p->every == 0 ||
		    i % p->every != 0)
			continue;
		n = snprintf(req, sizeof(req), "GET /notifications/user/%lld?min_version=%lld&wait=%s "
		    "HTTP/1.1\r\nHost: %s\r\n\r\n", (long long)a.id, (long long)a.version, p->wait,
		    p->consumer.host);
		if (conn_exchange(&cons, req, (size_t)n, &a) != 0)
			continue;
		t3 = now_s();
		p->get_status[i] = a.status;
		/* A 504 counts with its time, at least the wait: a lower bound of its latency. */
		if (a.status == 200 || a.status == 504)
			p->visible[i] = (t3 - t2) * 1e3;
	}
	conn_close(&api);
	conn_close(&cons);
	return NULL;
}

/* The values of xs that are not NaN, sorted, into out; returns their count. */
static long
collect(const double *xs, long n, double *out)
{
	long k = 0;

	for (long i = 0; i < n; i++)
		if (!isnan(xs[i]))
			out[k++] = xs[i];
	qsort(out, (size_t)k, sizeof(double), cmp_double);
	return k;
}

static double
pct(const double *sorted, long k, int p)
{
	return k > 0 ? sorted[(k * p) / 100 < k ? (k * p) / 100 : k - 1] : -1;
}

int
main(int argc, char **argv)
{
	struct probe p = { 0 };
	pthread_t *th;
	long threads, ok = 0, probed = 0, visible = 0, not_visible = 0, failed = 0, late = 0, k;
	double seconds, *s, last = 0;

	if (argc < 6) {
		fprintf(stderr, "usage: e2e_probe <api-url> <consumer-url> <rate> <seconds> <tag> "
		    "[threads] [wait] [every]\n");
		return 2;
	}
	p.rate = atof(argv[3]);
	seconds = atof(argv[4]);
	p.tag = argv[5];
	threads = argc > 6 ? atol(argv[6]) : 128;
	p.wait = argc > 7 ? argv[7] : "5s";
	p.every = argc > 8 ? atol(argv[8]) : 1;
	p.total = (long)(p.rate * seconds + 0.5);
	if (endpoint_parse(&p.api, argv[1]) != 0 || endpoint_parse(&p.consumer, argv[2]) != 0) {
		fprintf(stderr, "e2e_probe: the URLs must be http://host:port\n");
		return 2;
	}
	if (p.rate <= 0 || p.total < 1 || threads < 1 || p.every < 0) {
		fprintf(stderr, "e2e_probe: rate, seconds and threads must be positive, every at least "
		    "0\n");
		return 2;
	}
	p.late = malloc((size_t)p.total * sizeof(double));
	p.post = malloc((size_t)p.total * sizeof(double));
	p.visible = malloc((size_t)p.total * sizeof(double));
	p.post_status = calloc((size_t)p.total, sizeof(int));
	p.get_status = calloc((size_t)p.total, sizeof(int));
	s = malloc((size_t)p.total * sizeof(double));
	th = calloc((size_t)threads, sizeof(*th));
	for (long i = 0; i < p.total; i++)
		p.late[i] = p.post[i] = p.visible[i] = NAN;
	atomic_init(&p.next, 0);
	p.t0 = now_s() + 0.05;
	for (long i = 0; i < threads; i++)
		pthread_create(&th[i], NULL, probe_run, &p);
	for (long i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	for (long i = 0; i < p.total; i++) {
		if (p.post_status[i] == 201) {
			ok++;
			if ((double)i / p.rate + (p.late[i] + p.post[i]) / 1e3 > last)
				last = (double)i / p.rate + (p.late[i] + p.post[i]) / 1e3;
		} else {
			failed++;
		}
		if (p.post_status[i] == 201 && p.every > 0 && i % p.every == 0) {
			probed++;
			if (p.get_status[i] == 200)
				visible++;
			else
				not_visible++;
		}
		if (p.late[i] > 10)
			late++;
	}
	printf("{\"target_rate\": %.1f, \"seconds\": %.1f, \"writes\": %ld, \"threads\": %ld, "
	    "\"wait\": \"%s\", \"every\": %ld, \"posted\": %ld, \"failed\": %ld, "
	    "\"achieved_rate\": %.1f, ", p.rate, seconds, p.total, threads, p.wait, p.every, ok,
	    failed, last > 0 ? (double)ok / last : 0.0);
	k = collect(p.post, p.total, s);
	printf("\"post_p50_ms\": %.3f, \"post_p99_ms\": %.3f, ", pct(s, k, 50), pct(s, k, 99));
	k = collect(p.late, p.total, s);
	printf("\"late_p50_ms\": %.3f, \"late_p99_ms\": %.3f, \"late_max_ms\": %.3f, "
	    "\"late_over_10ms\": %ld, ", pct(s, k, 50), pct(s, k, 99), k ? s[k - 1] : -1, late);
	k = collect(p.visible, p.total, s);
	printf("\"probed\": %ld, \"visible\": %ld, \"not_visible\": %ld, \"visible_p50_ms\": %.3f, "
	    "\"visible_p99_ms\": %.3f, \"visible_max_ms\": %.3f}\n", probed, visible, not_visible,
	    pct(s, k, 50), pct(s, k, 99), k ? s[k - 1] : -1);
	free(p.late);
	free(p.post);
	free(p.visible);
	free(p.post_status);
	free(p.get_status);
	free(s);
	free(th);
	return 0;
}
