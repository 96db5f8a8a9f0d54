/* The HTTP front of every process: libmicrohttpd on an epoll thread pool, a route table, a body cap
 * enforced while uploading, problem+json errors, ids in paths, and /healthz, /readyz and /metrics
 * built in. List pages are in http_page.h. */
#ifndef COMMON_HTTPD_H
#define COMMON_HTTPD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evloop;
struct httpd;
struct http_request;

typedef void (*http_handler_fn)(struct http_request *req, void *arg);

struct http_route {
	const char *method;	/* "GET", "POST", ... */
	const char *pattern;	/* e.g. "/users/{}": each "{}" segment matches one non-empty path segment */
	http_handler_fn handler;
};

struct httpd_config {
	const char *bind;		/* address to listen on, e.g. "127.0.0.1" */
	long port;
	long threads;			/* worker threads, each with an epoll of its own */
	/* Instead of worker threads: libmicrohttpd runs on this loop's thread (common/evloop.h), and
	 * handlers must never block; they suspend what waits (http_suspend()). httpd_start()
	 * adds its tick and stop functions to the loop, which the caller starts after it;
	 * httpd_stop() stops the loop. */
	struct evloop *loop;
	long max_body;			/* bytes; larger bodies get 413 */
	long conn_timeout_s;		/* idle: every byte starts it again */
	long request_timeout_ms;	/* a request's headers and body must arrive within it */
	long max_connections;
	long max_connections_per_ip;
	/* Requests a second one address may make on average, and at once (429 beyond); 0: no
	 * limit. Loopback addresses are limited only with rate_limit_loopback. */
	long rate_limit, rate_burst;
	bool rate_limit_loopback;
	/* Bearer tokens with scopes (common/auth.h); empty: no authentication, and then only a
	 * loopback address may be listened on. */
	const char *tokens_file;
	/* PEM certificate chain and key: HTTPS when both are given. */
	const char *tls_cert, *tls_key;
	/* The prefix of the process's settings ("USER_API"), set in the settings' static
	 * initializer: messages name PREFIX_TLS_CERT and PREFIX_TLS_KEY. */
	const char *prefix;
};

/* Entries every HTTP server's settings table splices in: the token file, which every process
 * reads from the same variable, and PREFIX_TLS_CERT and PREFIX_TLS_KEY. */
#define HTTPD_SECURITY_ENTRIES(cfg, PREFIX)                                                          \
	{ "API_TOKENS_FILE", CONFIG_STRING, &(cfg).tokens_file, NULL, 0, 0,                          \
	    "file of bearer tokens, \"TOKEN SCOPE[,SCOPE...]\" a line (scopes read, write, metrics; "   \
	    "sha256:<hex> for a digest); SIGHUP rereads it; empty: no authentication, loopback only" },  \
	{ PREFIX "_TLS_CERT", CONFIG_STRING, &(cfg).tls_cert, NULL, 0, 0,                             \
	    "PEM certificate chain: HTTPS with " PREFIX "_TLS_KEY (empty: plain HTTP)" },               \
	{ PREFIX "_TLS_KEY", CONFIG_STRING, &(cfg).tls_key, NULL, 0, 0,                               \
	    "PEM private key of " PREFIX "_TLS_CERT" }

/* Entries every HTTP server's settings table splices in: the request deadline and the rate limit
 * per address (README, "Slow and greedy clients", says why the defaults are what they are). */
#define HTTPD_LIMIT_ENTRIES(cfg, PREFIX)                                                             \
	{ PREFIX "_REQUEST_TIMEOUT", CONFIG_MS, &(cfg).request_timeout_ms, "10s", 1000, 3600000,      \
	    "longest a request's headers and body may take to arrive, however slowly they come (then " \
	    "408 or the connection is closed); handling and answering it do not count" },              \
	{ PREFIX "_RATE_LIMIT", CONFIG_INT, &(cfg).rate_limit, "1000", 0, 1000000,                    \
	    "requests a second one client address may make on average (429 with Retry-After beyond; " \
	    "0: no limit; loopback addresses only with " PREFIX "_RATE_LIMIT_LOOPBACK)" },              \
	{ PREFIX "_RATE_BURST", CONFIG_INT, &(cfg).rate_burst, "2000", 1, 10000000,                   \
	    "requests one client address may make at once before " PREFIX "_RATE_LIMIT applies" },     \
	{ PREFIX "_RATE_LIMIT_LOOPBACK", CONFIG_BOOL, &(cfg).rate_limit_loopback, "false", 0, 0,      \
	    "limit loopback addresses (127.0.0.0/8) too; they share the machine (a proxy in front, "   \
	    "the benchmark) and are not limited by default" }

/* Fills *out (a new reference, caller json_decref()s) with the readiness checks and returns
 * whether the process is ready. */
typedef bool (*http_ready_fn)(void *arg, json_t **out);

/* Checks what the settings alone cannot: the address is IPv4, an address other than loopback
 * has a tokens file, the tokens file is valid, the certificate has its key. For the settings'
 * validation (--check) and httpd_start(). Returns 0, or -1 with err filled. */
int httpd_config_check(const struct httpd_config *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Starts listening. routes ends with a {NULL} entry and must outlive the server. Returns NULL with
 * err filled on failure. */
struct httpd *httpd_start(const struct httpd_config *cfg, const struct http_route *routes, void *arg,
    http_ready_fn ready, void *ready_arg, char *err, size_t errlen);
/* Stops accepting, lets in-flight requests finish for up to drain_ms, then stops. Suspended
 * requests count as in flight; the caller resumes them before (see http_suspend()), or, on a loop
 * (httpd_config.loop), in a stop function of the loop added before httpd_start()'s: httpd_stop()
 * stops the loop after the drain, and answers what the loop's stop functions resumed. */
void httpd_stop(struct httpd *h, long drain_ms);

/* Request accessors. Strings live as long as the request. */
const char *http_method(const struct http_request *req);
const char *http_path(const struct http_request *req);
/* The n-th "{}" segment of the matched pattern. */
const char *http_param(const struct http_request *req, size_t n);
const char *http_header(const struct http_request *req, const char *name);
const char *http_query(const struct http_request *req, const char *name);
const char *http_body(const struct http_request *req, size_t *len);
/* The X-Request-Id of the request, or a new uuid when it brought none; echoed in the response. A
 * request whose X-Request-Id is not 1 to 64 letters, digits, '-', '_' or '.' is answered 400
 * before it reaches a handler. */
const char *http_request_id(const struct http_request *req);
/* The log's scope (common/log.h) holds the request's id, and the trace id of its traceparent
 * header when that is valid, whenever its handler runs. This makes the trace id of traceparent
 * (valid, common/traceparent.h) the request's from now on: for a handler that starts a trace (a
 * write without a valid traceparent gets a new one, which its event carries on). */
void http_log_trace(struct http_request *req, const char *traceparent);

/* Response building. A handler answers exactly once. */
void http_add_header(struct http_request *req, const char *name, const char *value);
/* Takes over body (json_decref()s it). */
void http_reply_json(struct http_request *req, unsigned status, json_t *body);
void http_reply_text(struct http_request *req, unsigned status, const char *content_type,
    const char *body, size_t len);
void http_reply_empty(struct http_request *req, unsigned status);
/* The one way an error is answered: application/problem+json (RFC 9457) with type about:blank,
 * the status's title, the detail, and request_id; field, if not NULL, is added as "field" (the
 * parameter, header or body field at fault). The detail and field are always valid UTF-8: bytes
 * that are not (from a path or a query value) are shown as \xHH (utf8_quote()), and a detail
 * longer than 511 bytes is cut at a character. A status of 500 or more is also logged. */
void http_reply_problem(struct http_request *req, unsigned status, const char *field,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The same with more members: those of extra (a JSON object, taken over; NULL for none) are added,
 * except the standard ones above, which keep their values. For an answer that says more than its
 * detail, e.g. `{"min_version": 5, "version": 4}` of a read that waited in vain. */
void http_reply_problem_with(struct http_request *req, unsigned status, const char *field,
    json_t *extra, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A handler that cannot answer yet (it waits for something another thread, or on a loop a later
 * event, will report) suspends its request instead of blocking: it calls http_suspend() and
 * returns without answering, and the connection then holds no thread. Later any thread calls
 * http_resume(), once, and the thread that serves the connection (a worker thread, or the loop's
 * thread) calls resumed(req, arg), arg being the routes' argument: it answers, or suspends
 * again. http_resume() must come after http_suspend() (libmicrohttpd's behaviour is
 * undefined otherwise): a caller racing with the handler orders the two under a lock of its own.
 * After http_resume() the caller must not touch req: it may be answered and freed at once.
 * While suspended, a connection does not time out (its timeout starts again at the resume; the
 * request deadline ended when the request was whole), counts against the connection limits, and
 * its client's disconnect is not seen. Every suspended request must be resumed before
 * httpd_stop() begins: libmicrohttpd aborts the process when stopped with a connection still
 * suspended. */
void http_suspend(struct http_request *req, http_handler_fn resumed);
void http_resume(struct http_request *req);

/* State a handler keeps across suspensions: ctx lives until the request completes, then
 * free_fn(ctx) is called (unless free_fn is NULL) in the completion callback. One per request; a
 * second call replaces (and frees) the first. */
void http_set_context(struct http_request *req, void *ctx, void (*free_fn)(void *));
void *http_context(const struct http_request *req);

/* Parses a positive int64 path id; false for anything else (sign, leading zeros allowed, junk). */
bool http_parse_id(const char *s, int64_t *out);

/* The n-th "{}" segment of the path as an id (http_parse_id). When it is not one, answers 404
 * problem+json `<noun> "<segment>" does not exist` and returns false: the handler returns at once.
 * An id that cannot exist names no resource, so it gets the answer of an id that does not exist,
 * on every port. */
bool http_path_id(struct http_request *req, size_t n, const char *noun, int64_t *id)
    __attribute__((warn_unused_result));

#endif
