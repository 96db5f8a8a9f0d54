/* One thread on epoll: descriptors with callbacks, ticks after every wake-up, idle functions before
 * every wait, stop functions. */
#include "evloop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_HOOKS 4
#define MAX_EVENTS 64

/* What a watched descriptor calls. Kept in a table indexed by fd, so that an unwatch during a
 * round of events is seen by the events of the same round that follow. */
struct watch {
	evloop_io_fn fn;
	void *arg;
	bool active;
};

struct evloop {
	int ep;
	int wake_fd;		/* an eventfd: evloop_wake() and evloop_stop() */
	atomic_bool stopping;
	pthread_t thread;
	bool started;
	struct watch *watches;	/* the loop's thread only, once it runs */
	size_t nwatches;
	struct { evloop_tick_fn fn; void *arg; } ticks[MAX_HOOKS];
	size_t nticks;
	struct { evloop_idle_fn fn; void *arg; } idles[MAX_HOOKS];
	size_t nidles;
	struct { evloop_stop_fn fn; void *arg; } stops[MAX_HOOKS];
	size_t nstops;
};

struct evloop *
evloop_new(char *err, size_t errlen)
{
	struct evloop *l = calloc(1, sizeof(*l));

	if (l == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->ep < 0 || l->wake_fd < 0) {
		snprintf(err, errlen, "could not make an event loop: %s", strerror(errno));
		goto fail;
	}
	if (evloop_watch(l, l->wake_fd, EPOLLIN, NULL, NULL) != 0) {
		snprintf(err, errlen, "could not make an event loop: %s", strerror(errno));
		goto fail;
	}
	return l;
fail:
	if (l->ep >= 0)
		close(l->ep);
	if (l->wake_fd >= 0)
		close(l->wake_fd);
	free(l);
	return NULL;
}

int
evloop_watch(struct evloop *l, int fd, uint32_t events, evloop_io_fn fn, void *arg)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };
	bool known;

	if (fd < 0) {
		errno = EBADF;
		return -1;
	}
	if ((size_t)fd >= l->nwatches) {
		size_t n = l->nwatches ? l->nwatches : 64;
		struct watch *w;

		while (n <= (size_t)fd)
			n *= 2;
		w = realloc(l->watches, n * sizeof(*w));
		if (w == NULL) {
			errno = ENOMEM;
			return -1;
		}
		memset(w + l->nwatches, 0, (n - l->nwatches) * sizeof(*w));
		l->watches = w;
		l->nwatches = n;
	}
	known = l->watches[fd].active;
	if (epoll_ctl(l->ep, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0)
		return -1;
	l->watches[fd] = (struct watch){ fn, arg, true };
	return 0;
}

void
evloop_unwatch(struct evloop *l, int fd)
{
	if (fd >= 0 && (size_t)fd < l->nwatches && l->watches[fd].active) {
		(void)epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
		l->watches[fd].active = false;
	}
}

void
evloop_on_tick(struct evloop *l, evloop_tick_fn fn, void *arg)
{
	if (l->nticks < MAX_HOOKS) {
		l->ticks[l->nticks].fn = fn;
		l->ticks[l->nticks].arg = arg;
		l->nticks++;
	}
}

void
evloop_on_idle(struct evloop *l, evloop_idle_fn fn, void *arg)
{
	if (l->nidles < MAX_HOOKS) {
		l->idles[l->nidles].fn = fn;
		l->idles[l->nidles].arg = arg;
		l->nidles++;
	}
}

void
evloop_on_stop(struct evloop *l, evloop_stop_fn fn, void *arg)
{
	if (l->nstops < MAX_HOOKS) {
		l->stops[l->nstops].fn = fn;
		l->stops[l->nstops].arg = arg;
		l->nstops++;
	}
}

void
evloop_wake(struct evloop *l)
{
	uint64_t one = 1;

	/* A full counter (EAGAIN) still wakes the loop. */
	if (write(l->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return;
}

static void *
loop_run(void *arg)
{
	struct evloop *l = arg;
	struct epoll_event evs[MAX_EVENTS];
	long timeout = 0;

	while (!atomic_load(&l->stopping)) {
		int n = epoll_wait(l->ep, evs, MAX_EVENTS, (int)timeout);

		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			struct watch w;

			if (fd == l->wake_fd) {
				uint64_t v;

				(void)!read(l->wake_fd, &v, sizeof(v));
				continue;
			}
			w = (size_t)fd < l->nwatches ? l->watches[fd] : (struct watch){ 0 };
			if (w.active && w.fn != NULL)
				w.fn(w.arg, evs[i].events);
		}
		timeout = -1;
		for (size_t i = 0; i < l->nticks; i++) {
			long t = l->ticks[i].fn(l->ticks[i].arg);

			if (t >= 0 && (timeout < 0 || t < timeout))
				timeout = t;
		}
		if (timeout > 1000 || timeout < 0)
			timeout = 1000;	/* ticks also run once a second, whatever they said */
		for (size_t i = 0; i < l->nidles; i++)
			l->idles[i].fn(l->idles[i].arg);
	}
	for (size_t i = 0; i < l->nstops; i++)
		l->stops[i].fn(l->stops[i].arg);
	return NULL;
}

int
evloop_start(struct evloop *l, const char *name, char *err, size_t errlen)
{
	int rc = pthread_create(&l->thread, NULL, loop_run, l);

	if (rc != 0) {
		snprintf(err, errlen, "could not start the event loop's thread: %s", strerror(rc));
		return -1;
	}
	(void)pthread_setname_np(l->thread, name);
	l->started = true;
	return 0;
}

void
evloop_stop(struct evloop *l)
{
	if (l == NULL || !l->started)
		return;
	atomic_store(&l->stopping, true);
	evloop_wake(l);
	pthread_join(l->thread, NULL);
	l->started = false;
}

void
evloop_free(struct evloop *l)
{
	if (l == NULL)
		return;
	evloop_stop(l);
	close(l->ep);
	close(l->wake_fd);
	free(l->watches);
	free(l);
}
