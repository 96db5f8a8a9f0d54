/* Request deadlines per connection: a list under one lock, walked by a sweep a few times a second.
 * Its length is bounded by the server's connection limit. */
#include "http_deadline.h"

#include <pthread.h>
#include <stdlib.h>

struct http_deadlines {
	pthread_mutex_t mu;
	int64_t request_ms, wait_ms;
	struct http_conn_deadline *head;
};

struct http_conn_deadline {
	struct http_deadlines *d;
	struct http_conn_deadline *prev, *next;
	int fd;
	enum http_phase phase;
	int64_t due_ms;		/* in the WAITING, HEADERS and BODY phases; 0: none */
};

struct http_deadlines *
http_deadlines_new(int64_t request_ms, int64_t wait_ms)
{
	struct http_deadlines *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return NULL;
	pthread_mutex_init(&d->mu, NULL);
	d->request_ms = request_ms;
	d->wait_ms = wait_ms;
	return d;
}

void
http_deadlines_free(struct http_deadlines *d)
{
	if (d == NULL)
		return;
	while (d->head != NULL)
		http_deadline_close(d->head);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

struct http_conn_deadline *
http_deadline_open(struct http_deadlines *d, int fd, int64_t now_ms)
{
	struct http_conn_deadline *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->d = d;
	c->fd = fd;
	c->phase = HTTP_PHASE_HEADERS;
	c->due_ms = now_ms + d->request_ms;
	pthread_mutex_lock(&d->mu);
	c->next = d->head;
	if (d->head != NULL)
		d->head->prev = c;
	d->head = c;
	pthread_mutex_unlock(&d->mu);
	return c;
}

void
http_deadline_close(struct http_conn_deadline *c)
{
	struct http_deadlines *d;

	if (c == NULL)
		return;
	d = c->d;
	pthread_mutex_lock(&d->mu);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		d->head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&d->mu);
	free(c);
}

void
http_deadline_request_line(struct http_conn_deadline *c, int64_t now_ms)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->d->mu);
	/* The first request keeps the deadline counted from the connection's opening: the time to
	 * its request line is part of it. */
	if (c->phase == HTTP_PHASE_WAITING) {
		c->phase = HTTP_PHASE_HEADERS;
		c->due_ms = now_ms + c->d->request_ms;
	}
	pthread_mutex_unlock(&c->d->mu);
}

enum http_deadline_verdict
http_deadline_headers(struct http_conn_deadline *c, int64_t now_ms)
{
	enum http_deadline_verdict v = HTTP_DEADLINE_IN_TIME;

	if (c == NULL)
		return v;
	pthread_mutex_lock(&c->d->mu);
	if (c->phase == HTTP_PHASE_CUT) {
		v = HTTP_DEADLINE_CUT;
	} else if (now_ms > c->due_ms) {
		c->phase = HTTP_PHASE_CUT;
		v = HTTP_DEADLINE_LATE;
	} else {
		c->phase = HTTP_PHASE_BODY;
	}
	pthread_mutex_unlock(&c->d->mu);
	return v;
}

bool
http_deadline_body_done(struct http_conn_deadline *c)
{
	bool ok;

	if (c == NULL)
		return true;
	pthread_mutex_lock(&c->d->mu);
	ok = c->phase != HTTP_PHASE_CUT;
	if (ok)
		c->phase = HTTP_PHASE_HANDLING;
	pthread_mutex_unlock(&c->d->mu);
	return ok;
}

void
http_deadline_answered(struct http_conn_deadline *c, int64_t now_ms)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->d->mu);
	if (c->phase != HTTP_PHASE_CUT) {
		c->phase = HTTP_PHASE_WAITING;
		c->due_ms = c->d->wait_ms > 0 ? now_ms + c->d->wait_ms : 0;
	}
	pthread_mutex_unlock(&c->d->mu);
}

void
http_deadlines_postpone(struct http_deadlines *d, int64_t ms)
{
	pthread_mutex_lock(&d->mu);
	for (struct http_conn_deadline *c = d->head; c != NULL; c = c->next)
		if (c->due_ms != 0)
			c->due_ms += ms;
	pthread_mutex_unlock(&d->mu);
}

size_t
http_deadlines_sweep(struct http_deadlines *d, int64_t now_ms,
    void (*cut)(void *arg, int fd, enum http_phase phase), void *arg)
{
	size_t n = 0;

	pthread_mutex_lock(&d->mu);
	for (struct http_conn_deadline *c = d->head; c != NULL; c = c->next) {
		enum http_phase was = c->phase;

		if (was == HTTP_PHASE_HANDLING || was == HTTP_PHASE_CUT || c->due_ms == 0 ||
		    now_ms <= c->due_ms)
			continue;
		c->phase = HTTP_PHASE_CUT;
		cut(arg, c->fd, was);
		n++;
	}
	pthread_mutex_unlock(&d->mu);
	return n;
}
