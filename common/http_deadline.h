/* The deadline of the request arriving on each connection of an HTTP server. libmicrohttpd's own
 * timeout is an idle timeout that every byte starts again, so a client that trickles a request a
 * byte at a time holds its connection for ever; here a request's headers and body must arrive
 * whole by a fixed time. The HTTP front (httpd.c) reports each connection's progress, and a sweep
 * names the connections past their deadline, for the front to close. Bookkeeping only: no socket
 * is touched and no thread started here. Safe from any thread. */
#ifndef COMMON_HTTP_DEADLINE_H
#define COMMON_HTTP_DEADLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where a connection is in its current request. */
enum http_phase {
	HTTP_PHASE_WAITING,	/* kept alive after an answer; no request line yet */
	HTTP_PHASE_HEADERS,	/* the request line or the headers are arriving */
	HTTP_PHASE_BODY,	/* the headers are in; the body is arriving */
	HTTP_PHASE_HANDLING,	/* the request is whole: handled, suspended, or being answered */
	HTTP_PHASE_CUT,		/* it missed its deadline and is being closed */
};

/* What became of a request whose headers have just arrived. */
enum http_deadline_verdict {
	HTTP_DEADLINE_IN_TIME,
	HTTP_DEADLINE_LATE,	/* past its deadline: now marked cut, for the caller to answer 408 */
	HTTP_DEADLINE_CUT,	/* a sweep cut it already: close the connection */
};

struct http_deadlines;
struct http_conn_deadline;

/* request_ms: how long a request may take to arrive whole, from the connection's opening for its
 * first request and from its request line for the next ones on a kept-alive connection.
 * wait_ms: how long a kept-alive connection may wait for its next request line after an answer
 * (0: no limit here). Returns NULL when out of memory; the caller http_deadlines_free()s it after
 * every connection is closed. */
struct http_deadlines *http_deadlines_new(int64_t request_ms, int64_t wait_ms);
void http_deadlines_free(struct http_deadlines *d);

/* A connection on socket fd opened at now_ms: its first request is due by now_ms + request_ms.
 * Returns NULL when out of memory (the connection then has no deadline). The caller
 * http_deadline_close()s it when the connection closes, before fd is closed. */
struct http_conn_deadline *http_deadline_open(struct http_deadlines *d, int fd, int64_t now_ms);
/* Frees c; c may be NULL. */
void http_deadline_close(struct http_conn_deadline *c);

/* Progress of the request on c (each accepts NULL and then does nothing): its request line
 * arrived (it starts the deadline of a request on a kept-alive connection); its headers arrived;
 * its body arrived (false when a sweep cut it meanwhile: close it); it was answered (the next
 * request line is due within wait_ms). */
void http_deadline_request_line(struct http_conn_deadline *c, int64_t now_ms);
enum http_deadline_verdict http_deadline_headers(struct http_conn_deadline *c, int64_t now_ms);
bool http_deadline_body_done(struct http_conn_deadline *c);
void http_deadline_answered(struct http_conn_deadline *c, int64_t now_ms);

/* Moves every deadline ms later: for time in which the process did not run (it was stopped, or
 * the machine starved it) and so could not read what its clients sent. */
void http_deadlines_postpone(struct http_deadlines *d, int64_t ms);

/* Marks every connection whose request is past its deadline at now_ms as cut and calls
 * cut(arg, fd, phase) for each, phase being where its request was (HTTP_PHASE_WAITING,
 * _HEADERS or _BODY). The calls are made under the table's lock, so fd is still the connection's
 * socket (it is closed only after http_deadline_close()); cut must not call back in here.
 * Returns how many were cut. */
size_t http_deadlines_sweep(struct http_deadlines *d, int64_t now_ms,
    void (*cut)(void *arg, int fd, enum http_phase phase), void *arg);

#endif
