/* One thread that waits on many file descriptors (epoll) and runs their callbacks: the request path
 * of a process that must not block a thread per request (user-api's HTTP server and its
 * PostgreSQL connections share one). */
#ifndef COMMON_EVLOOP_H
#define COMMON_EVLOOP_H

#include <stddef.h>
#include <stdint.h>

struct evloop;

/* Called on the loop's thread with the epoll events (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP) of a
 * watched descriptor. */
typedef void (*evloop_io_fn)(void *arg, uint32_t events);
/* Called on the loop's thread after every wake-up, after the descriptors' callbacks, in the order
 * added; returns the milliseconds within which it must be called again, or -1 for "only after the
 * next event". */
typedef long (*evloop_tick_fn)(void *arg);
/* Called on the loop's thread after the ticks, right before the loop waits for events: the place
 * to send what a round of callbacks gathered. It must not start new work of its own. */
typedef void (*evloop_idle_fn)(void *arg);
/* Called on the loop's thread once, when the loop stops, before its thread ends. */
typedef void (*evloop_stop_fn)(void *arg);

/* Returns a loop that is not running yet, or NULL with err filled. */
struct evloop *evloop_new(char *err, size_t errlen);
/* Starts the loop's thread, named name (at most 15 characters). Returns 0, or -1 with err filled. */
int evloop_start(struct evloop *l, const char *name, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Runs every stop function on the loop's thread, then ends the thread and waits for it. Any
 * thread but the loop's own. */
void evloop_stop(struct evloop *l);
/* Frees a stopped (or never started) loop. */
void evloop_free(struct evloop *l);

/* Watches fd for events (EPOLLIN and/or EPOLLOUT; level-triggered), or changes what an already
 * watched fd waits for. The loop's thread, or any thread before evloop_start(): the table of
 * watches has no lock. Returns 0, or -1 (errno set). */
int evloop_watch(struct evloop *l, int fd, uint32_t events, evloop_io_fn fn, void *arg)
    __attribute__((warn_unused_result));
/* Stops watching fd; its callback is not called again, not even for events already returned in
 * the round being dispatched. The loop's thread only. */
void evloop_unwatch(struct evloop *l, int fd);
/* Adds a tick, idle or stop function (at most 4 of each); before evloop_start() only. */
void evloop_on_tick(struct evloop *l, evloop_tick_fn fn, void *arg);
void evloop_on_idle(struct evloop *l, evloop_idle_fn fn, void *arg);
void evloop_on_stop(struct evloop *l, evloop_stop_fn fn, void *arg);
/* Wakes the loop from any thread, so that its ticks run soon. */
void evloop_wake(struct evloop *l);

#endif
