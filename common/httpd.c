/* libmicrohttpd glue: per-request state hangs off the connection closure and is freed only in the
 * completion callback; responses are destroyed right after they are queued. */
#include "httpd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "evloop.h"
#include "file.h"
#include "http_deadline.h"
#include "log.h"
#include "metrics.h"
#include "percent.h"
#include "random.h"
#include "ratelimit.h"
#include "shutdown.h"
#include "traceparent.h"
#include "util.h"
#include "utf8.h"

#define MAX_PARAMS 4
#define HTTP_CONNECTION_MEMORY 16384
#define MAX_HEADERS 8
/* An X-Request-Id the server takes: 1 to REQUEST_ID_MAX letters, digits, '-', '_' or '.', so it
 * stays one token of a log line and of the answer's header; anything else is answered 400. */
#define REQUEST_ID_MAX 64

struct httpd {
	struct MHD_Daemon *daemon;
	const struct http_route *routes;
	void *arg;
	http_ready_fn ready;
	void *ready_arg;
	struct metrics_series *m_ready;	/* service_ready, set at each scrape of /metrics */
	long max_body;
	atomic_int active;
	atomic_int suspended;
	struct auth *auth;	/* NULL: no API_TOKENS_FILE, loopback only, everyone may do all */
	char *tls_key, *tls_cert;	/* PEM text libmicrohttpd reads while it runs, or NULL */
	size_t tls_key_len;
	pthread_t reloader;	/* rereads the tokens after SIGHUP */
	bool reloader_started;
	struct http_deadlines *deadlines;
	long request_timeout_ms;
	long wait_ms;		/* for the next request line on a kept-alive connection */
	pthread_t sweeper;	/* closes the connections whose request is past its deadline */
	bool sweeper_started;
	struct ratelimit *rate;	/* NULL: no rate limit */
	long rate_limit;
	bool rate_limit_loopback;
	atomic_bool stopping;
	struct evloop *loop;	/* NULL: libmicrohttpd's own worker threads */
	atomic_bool quiesce;	/* httpd_stop() asks the loop's thread to stop accepting */
	atomic_bool quiesced;
	MHD_socket listen_fd;	/* handed back by the quiesce, closed at the stop */
};

struct http_request {
	struct httpd *h;
	struct MHD_Connection *conn;
	const char *method;
	char *path;
	char *params[MAX_PARAMS];
	char *body;
	size_t len, cap;
	size_t discarded;	/* bytes dropped after the body passed the cap */
	bool too_large;
	bool replied;
	bool counted;
	unsigned scopes;	/* of the caller's token; every scope when authentication is off */
	char request_id[REQUEST_ID_MAX + 1];
	char trace_id[33];	/* of a valid traceparent header, for the log's scope; "" without */
	const char *route_label;
	int64_t start_ms;
	size_t nheaders;
	char *hnames[MAX_HEADERS], *hvalues[MAX_HEADERS];	/* in hbuf, or malloc()ed beyond */
	char hbuf[512];
	size_t hused;
	http_handler_fn resumed;	/* set while suspended; the serving thread only */
	void *ctx;
	void (*ctx_free)(void *);
	struct http_conn_deadline *deadline;	/* the connection's; NULL without one */
};

static const char *
status_title(unsigned status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Content";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Error";
	}
}

const char *
http_method(const struct http_request *req)
{
	return req->method;
}

const char *
http_path(const struct http_request *req)
{
	return req->path;
}

const char *
http_param(const struct http_request *req, size_t n)
{
	return n < MAX_PARAMS ? req->params[n] : NULL;
}

const char *
http_header(const struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *
http_query(const struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *
http_body(const struct http_request *req, size_t *len)
{
	*len = req->len;
	return req->body != NULL ? req->body : "";
}

const char *
http_request_id(const struct http_request *req)
{
	return req->request_id;
}

void
http_set_context(struct http_request *req, void *ctx, void (*free_fn)(void *))
{
	if (req->ctx != NULL && req->ctx_free != NULL)
		req->ctx_free(req->ctx);
	req->ctx = ctx;
	req->ctx_free = free_fn;
}

void *
http_context(const struct http_request *req)
{
	return req->ctx;
}

void
http_suspend(struct http_request *req, http_handler_fn resumed)
{
	req->resumed = resumed;
	atomic_fetch_add(&req->h->suspended, 1);
	MHD_suspend_connection(req->conn);
}

void
http_resume(struct http_request *req)
{
	/* Read before the resume: from then on the serving thread may answer and free req. */
	struct httpd *h = req->h;
	struct MHD_Connection *conn = req->conn;

	atomic_fetch_sub(&h->suspended, 1);
	MHD_resume_connection(conn);
}

/* A copy of s in the request's header buffer, or malloc()ed when it is full (NULL without
 * memory). */
static char *
header_copy(struct http_request *req, const char *s)
{
	size_t n = strlen(s) + 1;
	char *at;

	if (n > sizeof(req->hbuf) - req->hused)
		return strdup(s);
	at = memcpy(req->hbuf + req->hused, s, n);
	req->hused += n;
	return at;
}

static void
header_free(struct http_request *req, char *s)
{
	uintptr_t a = (uintptr_t)s, buf = (uintptr_t)req->hbuf;

	if (a < buf || a >= buf + sizeof(req->hbuf))
		free(s);
}

void
http_add_header(struct http_request *req, const char *name, const char *value)
{
	if (req->nheaders == MAX_HEADERS)
		return;
	req->hnames[req->nheaders] = header_copy(req, name);
	req->hvalues[req->nheaders] = header_copy(req, value);
	req->nheaders++;
}

/* The method as a metric label: one of a fixed set, so that a client cannot add series. */
static const char *
method_label(const char *method)
{
	static const char *const known[] = { "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
		"OPTIONS" };

	for (size_t i = 0; i < ARRAY_SIZE(known); i++)
		if (strcmp(method, known[i]) == 0)
			return known[i];
	return "other";
}

/* The series of one kind of answer, remembered by each thread: finding a series in the registry
 * (its lock, its labels written and compared) took more time than the rest of an answer's
 * bookkeeping. Route labels and method labels are static strings, so their addresses are keys. */
struct answer_series {
	const char *route, *method;
	unsigned status;
	struct metrics_series *count, *duration;
};

#define ANSWER_CACHE 32

static struct answer_series *
answer_series(const char *route, const char *method, unsigned status)
{
	static _Thread_local struct answer_series cache[ANSWER_CACHE];
	static _Thread_local size_t used, next;
	struct answer_series *a;
	char code[16];

	for (size_t i = 0; i < used; i++)
		if (cache[i].route == route && cache[i].method == method && cache[i].status == status)
			return &cache[i];
	a = &cache[used < ANSWER_CACHE ? used++ : next++ % ANSWER_CACHE];
	snprintf(code, sizeof(code), "%u", status);
	a->route = route;
	a->method = method;
	a->status = status;
	a->count = metrics_counter("http_requests_total", "HTTP requests answered", "route", route,
	    "method", method, "code", code, NULL);
	a->duration = metrics_histogram("http_request_duration_seconds",
	    "Time from the request's arrival to its answer", metrics_latency_bounds,
	    metrics_latency_nbounds, "route", route, NULL);
	return a;
}

/* The request's ids on every line logged while it is handled (LOG_FORMAT=json, common/log.h):
 * set on each call of on_request() in which the request is handled, answered or resumed, and
 * cleared as that call returns, since user-api's loop thread takes turns among many requests. The
 * access line of count_request() is always written inside such a call: a handler answers from
 * on_request(), at once or after its resume. */
static void
request_scope(const struct http_request *req)
{
	if (!log_scope_enabled())
		return;
	log_scope_set(LOG_ID_REQUEST, req->request_id);
	log_scope_set(LOG_ID_TRACE, req->trace_id);
}

void
http_log_trace(struct http_request *req, const char *traceparent)
{
	if (!log_scope_enabled())
		return;
	memcpy(req->trace_id, traceparent + 3, 32);	/* "00-" and the trace id's 32 digits */
	req->trace_id[32] = '\0';
	request_scope(req);
}

static void
count_request(struct http_request *req, unsigned status)
{
	double secs = (double)(mono_ms() - req->start_ms) / 1000.0;
	const char *route = req->route_label ? req->route_label : "other";
	struct answer_series *a = answer_series(route, method_label(req->method), status);

	metrics_add(a->count, 1);
	metrics_observe(a->duration, secs);
	if (route[0] == '/' && strncmp(route, "/healthz", 8) != 0 && strncmp(route, "/metrics", 8) != 0)
		log_info("%s %s %u %.1fms rid=%s", req->method, req->path, status, secs * 1000.0,
		    req->request_id);
	else
		log_debug("%s %s %u %.1fms rid=%s", req->method, req->path, status, secs * 1000.0,
		    req->request_id);
}

static void
reply_buffer(struct http_request *req, unsigned status, const char *content_type, char *body,
    size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *resp;

	if (req->replied) {
		log_warnx("second reply to %s %s ignored rid=%s", req->method, req->path, req->request_id);
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return;
	}
	req->replied = true;
	resp = MHD_create_response_from_buffer(len, body, mode);
	if (resp == NULL) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return;
	}
	if (content_type != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(resp, "X-Request-Id", req->request_id);
	for (size_t i = 0; i < req->nheaders; i++)
		if (req->hnames[i] && req->hvalues[i])
			MHD_add_response_header(resp, req->hnames[i], req->hvalues[i]);
	if (status == 413)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	MHD_queue_response(req->conn, status, resp);
	MHD_destroy_response(resp);
	count_request(req, status);
}

void
http_reply_json(struct http_request *req, unsigned status, json_t *body)
{
	char *s = json_dumps(body, JSON_COMPACT);

	json_decref(body);
	if (s == NULL) {
		reply_buffer(req, 500, "text/plain", "out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
		return;
	}
	reply_buffer(req, status, "application/json", s, strlen(s), MHD_RESPMEM_MUST_FREE);
}

void
http_reply_text(struct http_request *req, unsigned status, const char *content_type,
    const char *body, size_t len)
{
	reply_buffer(req, status, content_type, (char *)body, len, MHD_RESPMEM_MUST_COPY);
}

void
http_reply_empty(struct http_request *req, unsigned status)
{
	reply_buffer(req, status, NULL, "", 0, MHD_RESPMEM_PERSISTENT);
}

static void
reply_problem(struct http_request *req, unsigned status, const char *field, json_t *extra,
    const char *fmt, va_list ap)
{
	char raw[1024], detail[512], shown[128];
	json_t *p;
	char *s;

	/* Quoting into a buffer half the size of raw: a sequence that vsnprintf() cut at the end of
	 * raw is never reached, and the detail is cut at a character. */
	vsnprintf(raw, sizeof(raw), fmt, ap);
	utf8_quote(detail, sizeof(detail), raw, strlen(raw));
	p = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", "about:blank", "title", status_title(status),
	    "status", (int)status, "detail", detail, "request_id", req->request_id);
	if (p != NULL && field != NULL) {
		utf8_quote(shown, sizeof(shown), field, strlen(field));
		json_object_set_new(p, "field", json_string(shown));
	}
	if (p != NULL && extra != NULL)
		json_object_update_missing(p, extra);
	json_decref(extra);
	s = p ? json_dumps(p, JSON_COMPACT) : NULL;
	json_decref(p);
	if (s == NULL) {
		reply_buffer(req, 500, "text/plain", "out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
		return;
	}
	if (status >= 500)
		log_warnx("%s %s: %s rid=%s", req->method, req->path, detail, req->request_id);
	reply_buffer(req, status, "application/problem+json", s, strlen(s), MHD_RESPMEM_MUST_FREE);
}

void
http_reply_problem(struct http_request *req, unsigned status, const char *field, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	reply_problem(req, status, field, NULL, fmt, ap);
	va_end(ap);
}

void
http_reply_problem_with(struct http_request *req, unsigned status, const char *field, json_t *extra,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	reply_problem(req, status, field, extra, fmt, ap);
	va_end(ap);
}

bool
http_parse_id(const char *s, int64_t *out)
{
	int64_t v = 0;

	if (s == NULL || *s == '\0' || strlen(s) > 19)
		return false;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		if (v > (INT64_MAX - (*p - '0')) / 10)
			return false;
		v = v * 10 + (*p - '0');
	}
	if (v <= 0)
		return false;
	*out = v;
	return true;
}

bool
http_path_id(struct http_request *req, size_t n, const char *noun, int64_t *id)
{
	const char *segment = http_param(req, n);

	if (http_parse_id(segment, id))
		return true;
	if (segment == NULL)
		segment = "";
	http_reply_problem(req, 404, NULL, "%s \"%.*s\" does not exist", noun,
	    (int)utf8_prefix(segment, 40), segment);
	return false;
}

/* Matches path against pattern segment by segment, capturing "{}" segments. */
static bool
route_match(const char *pattern, const char *path, struct http_request *req, bool capture)
{
	size_t np = 0;

	while (*pattern && *path) {
		if (*pattern != '/' || *path != '/')
			return false;
		pattern++;
		path++;
		if (pattern[0] == '{' && pattern[1] == '}') {
			size_t n = strcspn(path, "/");

			if (n == 0)
				return false;
			if (capture && np < MAX_PARAMS) {
				free(req->params[np]);
				req->params[np] = strndup(path, n);
			}
			np++;
			pattern += 2;
			path += n;
		} else {
			size_t n = strcspn(pattern, "/");

			if (strncmp(pattern, path, n) != 0 || (path[n] != '/' && path[n] != '\0'))
				return false;
			pattern += n;
			path += n;
		}
	}
	return *pattern == '\0' && *path == '\0';
}

/* What /readyz answers now; *checks as http_ready_fn fills it (NULL without a ready function). */
static bool
ready_now(struct httpd *h, json_t **checks)
{
	*checks = NULL;
	return h->ready != NULL ? h->ready(h->ready_arg, checks) : true;
}

/* Sets service_ready to the answer /readyz would give, for an alert on it: a scraper reads
 * /metrics, not /readyz. Every process's checks are cheap (flags and the state of its connections,
 * no round trip), so each scrape can afford them. */
static void
ready_record(struct httpd *h)
{
	json_t *checks;

	metrics_set(h->m_ready, ready_now(h, &checks) ? 1 : 0);
	json_decref(checks);
}

static void
serve_builtin_ready(struct http_request *req)
{
	json_t *checks;
	bool ok = ready_now(req->h, &checks);
	json_t *body = json_pack("{s:s}", "status", ok ? "ready" : "not ready");

	/* Which check failed and why is for operators: a token with the metrics scope, or anyone
	 * when authentication is off (loopback only). */
	if (checks != NULL && (req->scopes & AUTH_SCOPE_METRICS) != 0)
		json_object_set_new(body, "checks", checks);
	else
		json_decref(checks);
	if (!ok)
		http_add_header(req, "Retry-After", "1");
	http_reply_json(req, ok ? 200 : 503, body);
}

static bool
serve_builtin(struct http_request *req)
{
	if (strcmp(req->path, "/healthz") == 0) {
		req->route_label = "/healthz";
		if (strcmp(req->method, "GET") != 0) {
			http_add_header(req, "Allow", "GET");
			http_reply_problem(req, 405, NULL, "%s is not allowed on %s", req->method, req->path);
		} else {
			http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
		}
		return true;
	}
	if (strcmp(req->path, "/readyz") == 0) {
		req->route_label = "/readyz";
		if (strcmp(req->method, "GET") != 0) {
			http_add_header(req, "Allow", "GET");
			http_reply_problem(req, 405, NULL, "%s is not allowed on %s", req->method, req->path);
		} else {
			serve_builtin_ready(req);
		}
		return true;
	}
	if (strcmp(req->path, "/metrics") == 0) {
		size_t len;
		char *text;

		req->route_label = "/metrics";
		if (strcmp(req->method, "GET") != 0) {
			http_add_header(req, "Allow", "GET");
			http_reply_problem(req, 405, NULL, "%s is not allowed on %s", req->method, req->path);
			return true;
		}
		ready_record(req->h);
		text = metrics_render(&len);
		if (text == NULL) {
			http_reply_problem(req, 500, NULL, "could not render metrics: out of memory");
			return true;
		}
		reply_buffer(req, 200, "text/plain; version=0.0.4", text, len, MHD_RESPMEM_MUST_FREE);
		return true;
	}
	return false;
}

static void
dispatch(struct http_request *req)
{
	char allow[128] = "";
	const struct http_route *r;

	if (serve_builtin(req))
		return;
	for (r = req->h->routes; r->method != NULL; r++) {
		if (!route_match(r->pattern, req->path, req, false))
			continue;
		if (strcmp(r->method, req->method) == 0) {
			route_match(r->pattern, req->path, req, true);
			req->route_label = r->pattern;
			r->handler(req, req->h->arg);
			if (!req->replied && req->resumed == NULL)
				http_reply_problem(req, 500, NULL, "the handler gave no answer");
			return;
		}
		if (strstr(allow, r->method) == NULL && strlen(allow) + strlen(r->method) + 3 < sizeof(allow)) {
			if (allow[0])
				strcat(allow, ", ");
			strcat(allow, r->method);
		}
	}
	if (allow[0]) {
		http_add_header(req, "Allow", allow);
		http_reply_problem(req, 405, NULL, "%s is not allowed on %s; allowed: %s", req->method,
		    req->path, allow);
		return;
	}
	http_reply_problem(req, 404, NULL, "no such resource");
}

/* The scope a request needs: none for /healthz and /readyz, metrics for /metrics, read to read,
 * write for everything else. */
static unsigned
scope_needed(const struct http_request *req)
{
	if (strcmp(req->path, "/healthz") == 0 || strcmp(req->path, "/readyz") == 0)
		return 0;
	if (strcmp(req->path, "/metrics") == 0)
		return AUTH_SCOPE_METRICS;
	if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
		return AUTH_SCOPE_READ;
	return AUTH_SCOPE_WRITE;
}

/* The route a request is for, before its method is checked: the label of a refused request. */
static const char *
route_of(struct http_request *req)
{
	static const char *const builtin[] = { "/healthz", "/readyz", "/metrics" };

	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		if (strcmp(req->path, builtin[i]) == 0)
			return builtin[i];
	for (const struct http_route *r = req->h->routes; r->method != NULL; r++)
		if (route_match(r->pattern, req->path, req, false))
			return r->pattern;
	return NULL;
}

/* The caller's IPv4 address, in host order; false when it is not one. */
static bool
client_ipv4(struct MHD_Connection *conn, uint32_t *addr)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn,
	    MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr_in *sa = ci ? (const struct sockaddr_in *)ci->client_addr : NULL;

	if (sa == NULL || sa->sin_family != AF_INET)
		return false;
	*addr = ntohl(sa->sin_addr.s_addr);
	return true;
}

static void
client_address(struct MHD_Connection *conn, char *out, size_t outlen)
{
	uint32_t addr;
	struct in_addr in;

	if (!client_ipv4(conn, &addr)) {
		snprintf(out, outlen, "unknown");
		return;
	}
	in.s_addr = htonl(addr);
	if (inet_ntop(AF_INET, &in, out, (socklen_t)outlen) == NULL)
		snprintf(out, outlen, "unknown");
}

/* Checks the caller's bearer token against the scope the request needs. Answers 401 or 403 and
 * returns false when it falls short; the refusal is logged with the caller's address, never the
 * token. */
static bool
authorize(struct http_request *req)
{
	unsigned need;
	enum auth_result r;
	char challenge[128], addr[INET_ADDRSTRLEN];
	const char *why;

	if (req->h->auth == NULL) {
		req->scopes = AUTH_SCOPE_READ | AUTH_SCOPE_WRITE | AUTH_SCOPE_METRICS;
		return true;
	}
	need = scope_needed(req);
	r = auth_check(req->h->auth, http_header(req, MHD_HTTP_HEADER_AUTHORIZATION), need, &req->scopes);
	if (need == 0 || r == AUTH_OK)
		return true;
	req->route_label = route_of(req);
	client_address(req->conn, addr, sizeof(addr));
	switch (r) {
	case AUTH_MISSING:
		why = "no bearer token";
		http_add_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"user-sync\"");
		http_reply_problem(req, 401, NULL, "a bearer token is required (Authorization: Bearer <token>)");
		break;
	case AUTH_INVALID:
		why = "a token that is not valid";
		http_add_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
		    "Bearer realm=\"user-sync\", error=\"invalid_token\"");
		http_reply_problem(req, 401, NULL, "the bearer token is not valid");
		break;
	default:
		why = "a token without the scope";
		snprintf(challenge, sizeof(challenge),
		    "Bearer realm=\"user-sync\", error=\"insufficient_scope\", scope=\"%s\"",
		    auth_scope_name(need));
		http_add_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE, challenge);
		http_reply_problem(req, 403, NULL, "the token does not have the %s scope",
		    auth_scope_name(need));
		break;
	}
	log_warnx("http: refused a request for %s from %s: %s rid=%s",
	    req->route_label ? req->route_label : "an unknown path", addr, why, req->request_id);
	return false;
}

static bool
request_id_ok(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++)
		if (!isalnum((unsigned char)s[n]) && s[n] != '-' && s[n] != '_' && s[n] != '.')
			return false;
	return n > 0 && n <= REQUEST_ID_MAX;
}

/* The deadline of the request on conn's connection (http_deadline.h), or NULL. */
static struct http_conn_deadline *
conn_deadline(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn,
	    MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci != NULL ? ci->socket_context : NULL;
}

#define CUT_OFF_HELP "Requests whose headers and body did not arrive by the request deadline, " \
	"answered 408 or closed"

static void
count_cut_off(enum http_phase phase)
{
	metrics_add(metrics_counter("http_requests_cut_off_total", CUT_OFF_HELP, "phase",
	    phase == HTTP_PHASE_BODY ? "body" : "headers", NULL), 1);
}

/* Takes a token of the caller's address (common/ratelimit.h). When there is none, answers 429
 * with Retry-After and returns false. Loopback addresses are the machine itself (a proxy in
 * front, the benchmark) and pass unless rate_limit_loopback is set. */
static bool
rate_allowed(struct http_request *req)
{
	struct httpd *h = req->h;
	uint32_t addr;
	long retry_s = 1;
	char retry[24];

	if (h->rate == NULL || !client_ipv4(req->conn, &addr))
		return true;
	if ((addr >> 24) == 127 && !h->rate_limit_loopback)
		return true;
	if (ratelimit_take(h->rate, addr, mono_ms(), &retry_s))
		return true;
	req->route_label = route_of(req);
	snprintf(retry, sizeof(retry), "%ld", retry_s);
	http_add_header(req, MHD_HTTP_HEADER_RETRY_AFTER, retry);
	http_reply_problem(req, 429, NULL, "too many requests from this address (more than %ld a "
	    "second); try again in %ld s", h->rate_limit, retry_s);
	return false;
}

/* libmicrohttpd's handler, called for a request's headers, for each piece of its body, when it is
 * whole, and after each resume; on_request() clears the log's scope that it sets. */
static enum MHD_Result
request_step(struct httpd *h, struct MHD_Connection *conn, const char *url, const char *method,
    const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_request *req = *con_cls;

	if (req == NULL) {
		const char *rid, *cl, *tp;

		req = calloc(1, sizeof(*req));
		if (req == NULL)
			return MHD_NO;
		req->h = h;
		req->conn = conn;
		req->method = method;
		req->path = strdup(url ? url : "");
		req->start_ms = mono_ms();
		atomic_fetch_add(&h->active, 1);
		req->counted = true;
		*con_cls = req;
		if (req->path == NULL)
			return MHD_NO;
		rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
		if (rid != NULL && request_id_ok(rid))
			snprintf(req->request_id, sizeof(req->request_id), "%s", rid);
		else
			uuid_new(req->request_id);
		/* Only when a line would show it: a header read and checked on every request. */
		if (log_scope_enabled() && (tp = http_header(req, "traceparent")) != NULL &&
		    traceparent_valid(tp))
			http_log_trace(req, tp);
		request_scope(req);
		req->deadline = conn_deadline(conn);
		switch (http_deadline_headers(req->deadline, mono_ms())) {
		case HTTP_DEADLINE_CUT:		/* a sweep closed the connection meanwhile */
			return MHD_NO;
		case HTTP_DEADLINE_LATE:
			/* Here, and after the body, is where libmicrohttpd lets a request be answered. */
			count_cut_off(HTTP_PHASE_HEADERS);
			req->route_label = route_of(req);
			http_add_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
			http_reply_problem(req, 408, NULL, "the request did not arrive within %ld ms",
			    h->request_timeout_ms);
			return MHD_YES;
		case HTTP_DEADLINE_IN_TIME:
			break;
		}
		/* Before the body is read: a caller who may not call or write does not get to upload. */
		if (!rate_allowed(req) || !authorize(req))
			return MHD_YES;
		/* A request id that is not one is refused rather than replaced: its sender would look
		 * for it in the logs and the answer, and find another. */
		if (rid != NULL && !request_id_ok(rid)) {
			req->route_label = route_of(req);
			http_reply_problem(req, 400, "X-Request-Id", "X-Request-Id \"%.*s\" is not 1 to %d "
			    "letters, digits, '-', '_' or '.'", (int)utf8_prefix(rid, 64), rid,
			    REQUEST_ID_MAX);
			return MHD_YES;
		}
		cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl != NULL && strtoull(cl, NULL, 10) > (unsigned long long)h->max_body) {
			req->too_large = true;
			http_reply_problem(req, 413, NULL, "the body is larger than %ld bytes", h->max_body);
		}
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		/* libmicrohttpd cannot answer in the middle of an upload, so an oversized body without
		 * Content-Length (chunked) is read and dropped, and answered 413 at its end; one that
		 * goes on far past the cap is cut off. The body of a request refused before it was
		 * read (401, 403) is dropped the same way. */
		if (req->too_large || req->replied) {
			req->discarded += n;
			return req->discarded > (size_t)h->max_body * 16 ? MHD_NO : MHD_YES;
		}
		if (req->len + n > (size_t)h->max_body) {
			req->too_large = true;
			req->discarded = req->len + n;
			free(req->body);
			req->body = NULL;
			req->len = 0;
			req->cap = 0;
			return MHD_YES;
		}
		if (req->len + n + 1 > req->cap) {
			size_t cap = req->cap ? req->cap : 1024;
			char *b;

			while (cap < req->len + n + 1)
				cap *= 2;
			b = realloc(req->body, cap);
			if (b == NULL)
				return MHD_NO;
			req->body = b;
			req->cap = cap;
		}
		memcpy(req->body + req->len, upload_data, n);
		req->len += n;
		req->body[req->len] = '\0';
		return MHD_YES;
	}
	/* The request is whole: handled from here on (or suspended) without a deadline, unless a
	 * sweep cut it off just now. */
	request_scope(req);
	if (!http_deadline_body_done(req->deadline) && !req->replied)
		return MHD_NO;
	if (req->replied)
		return MHD_YES;
	/* Called again after http_resume(): the handler goes on where it suspended. */
	if (req->resumed != NULL) {
		http_handler_fn resumed = req->resumed;

		req->resumed = NULL;
		resumed(req, h->arg);
		if (!req->replied && req->resumed == NULL)
			http_reply_problem(req, 500, NULL, "the handler gave no answer");
		return MHD_YES;
	}
	if (req->too_large) {
		http_reply_problem(req, 413, NULL, "the body is larger than %ld bytes", h->max_body);
		return MHD_YES;
	}
	dispatch(req);
	return MHD_YES;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	enum MHD_Result r;

	(void)version;
	r = request_step(cls, conn, url, method, upload_data, upload_data_size, con_cls);
	log_scope_clear();
	return r;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct httpd *h = cls;
	struct http_request *req = *con_cls;

	(void)toe;
	/* The next request on a kept-alive connection is due within the idle timeout. */
	http_deadline_answered(conn_deadline(conn), mono_ms());
	if (req == NULL)
		return;
	if (req->counted)
		atomic_fetch_sub(&h->active, 1);
	free(req->path);
	for (size_t i = 0; i < MAX_PARAMS; i++)
		free(req->params[i]);
	for (size_t i = 0; i < req->nheaders; i++) {
		header_free(req, req->hnames[i]);
		header_free(req, req->hvalues[i]);
	}
	free(req->body);
	if (req->ctx != NULL && req->ctx_free != NULL)
		req->ctx_free(req->ctx);
	free(req);
	*con_cls = NULL;
}

/* A connection opens or closes: its request deadline is made or dropped, before libmicrohttpd
 * closes its socket (the sweep may shut the socket down up to then). */
static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
    enum MHD_ConnectionNotificationCode code)
{
	struct httpd *h = cls;
	const union MHD_ConnectionInfo *ci;

	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		http_deadline_close(*socket_context);
		*socket_context = NULL;
		return;
	}
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (h->deadlines != NULL && ci != NULL)
		*socket_context = http_deadline_open(h->deadlines, ci->connect_fd, mono_ms());
}

/* The request line arrived (libmicrohttpd's URI logger, the one call it makes before the
 * headers are in): a request on a kept-alive connection starts its deadline. */
static void *
on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
	(void)cls;
	(void)uri;
	http_deadline_request_line(conn_deadline(conn), mono_ms());
	return NULL;
}

/* Closes a connection whose request missed its deadline. libmicrohttpd has no call that closes a
 * connection from outside its worker thread, and lets a request be answered only once its headers
 * or its whole body are in, so a request cut off halfway gets no answer: shutdown(2) ends the
 * connection both ways, and its worker thread, woken by that, sees the end and closes it. Called
 * under the deadlines' lock, before libmicrohttpd can close fd. */
static void
cut_connection(void *arg, int fd, enum http_phase phase)
{
	struct httpd *h = arg;
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	char addr[INET_ADDRSTRLEN] = "unknown";

	if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0 && sa.sin_family == AF_INET)
		inet_ntop(AF_INET, &sa.sin_addr, addr, sizeof(addr));
	shutdown(fd, SHUT_RDWR);
	count_cut_off(phase);
	if (phase == HTTP_PHASE_WAITING)
		log_warnx("http: closed the connection of %s: its next request line did not arrive "
		    "within %ld ms of the last answer", addr, h->wait_ms);
	else
		log_warnx("http: closed the connection of %s: its request's %s did not arrive within "
		    "%ld ms", addr, phase == HTTP_PHASE_BODY ? "body" : "headers", h->request_timeout_ms);
}

/* Cuts off the requests past their deadline, five times a second. */
static void *
deadline_sweeper(void *arg)
{
	struct httpd *h = arg;
	int64_t last = mono_ms();

	while (!atomic_load(&h->stopping)) {
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		int64_t now = mono_ms();

		/* A sweep a second late: the process did not run meanwhile (SIGSTOP, a starved
		 * machine), so it read nothing its clients sent; that time is not theirs. */
		if (now - last > 1000)
			http_deadlines_postpone(h->deadlines, now - last - 200);
		last = now;
		http_deadlines_sweep(h->deadlines, now, cut_connection, h);
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* Percent-decodes the path and query values in place (percent.h says how). */
static size_t
on_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	return percent_decode(s);
}

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_debug("http: %s", msg);
}

/* Rereads the tokens after each SIGHUP, and says what came of it. */
static void *
tokens_reloader(void *arg)
{
	struct httpd *h = arg;

	while (!atomic_load(&h->stopping)) {
		struct timespec ts = { 0, 100 * 1000 * 1000 };

		if (reload_requested()) {
			char err[512];
			size_t n;

			if (auth_reload(h->auth, &n, err, sizeof(err)) == 0)
				log_info("http: reloaded the API tokens: %zu in use", n);
			else
				log_error("http: could not reload the API tokens, the %zu in use stay: %s",
				    auth_count(h->auth), err);
		}
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* Reads a PEM file whole (certificates and keys are a few KiB; a chain of a dozen fits in
 * 256 KiB); NULL with err filled when it cannot or it is empty. The caller frees the result. */
static char *
read_pem(const char *setting, const char *path, size_t *len, char *err, size_t errlen)
{
	char *buf = file_read(setting, path, 256 * 1024, len, err, errlen);

	if (buf != NULL && *len == 0) {
		snprintf(err, errlen, "could not read %s \"%s\": it is empty", setting, path);
		free(buf);
		return NULL;
	}
	return buf;
}

static void
httpd_free(struct httpd *h)
{
	if (h->tls_key != NULL) {
		explicit_bzero(h->tls_key, h->tls_key_len);
		free(h->tls_key);
	}
	free(h->tls_cert);
	auth_free(h->auth);
	http_deadlines_free(h->deadlines);
	ratelimit_free(h->rate);
	free(h);
}

static bool
is_set(const char *s)
{
	return s != NULL && s[0] != '\0';
}

int
httpd_config_check(const struct httpd_config *cfg, char *err, size_t errlen)
{
	struct in_addr addr;

	if (inet_pton(AF_INET, cfg->bind, &addr) != 1) {
		snprintf(err, errlen, "invalid %s_BIND \"%s\": expected an IPv4 address such as 127.0.0.1",
		    cfg->prefix, cfg->bind);
		return -1;
	}
	if (!is_set(cfg->tokens_file) && (ntohl(addr.s_addr) >> 24) != 127) {
		snprintf(err, errlen, "refusing to listen on %s without authentication: set API_TOKENS_FILE "
		    "to a file of bearer tokens, or %s_BIND to a loopback address such as 127.0.0.1",
		    cfg->bind, cfg->prefix);
		return -1;
	}
	if (is_set(cfg->tokens_file)) {
		struct auth *a = auth_new(cfg->tokens_file, err, errlen);

		if (a == NULL)
			return -1;
		auth_free(a);
	}
	if (is_set(cfg->tls_cert) != is_set(cfg->tls_key)) {
		snprintf(err, errlen, "HTTPS needs both %s_TLS_CERT and %s_TLS_KEY", cfg->prefix,
		    cfg->prefix);
		return -1;
	}
	if (is_set(cfg->tls_cert) && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
		snprintf(err, errlen, "this libmicrohttpd was built without TLS: unset %s_TLS_CERT and "
		    "%s_TLS_KEY", cfg->prefix, cfg->prefix);
		return -1;
	}
	return 0;
}

/* Who may call, over what: the tokens, and HTTPS when a certificate and its key are given.
 * Fills h and opts (ending with MHD_OPTION_END). */
static int
security_setup(struct httpd *h, const struct httpd_config *cfg, struct MHD_OptionItem *opts,
    unsigned *flags, char *err, size_t errlen)
{
	char setting[64];
	size_t n = 0, cert_len;

	if (httpd_config_check(cfg, err, errlen) != 0)
		return -1;
	if (is_set(cfg->tokens_file) && (h->auth = auth_new(cfg->tokens_file, err, errlen)) == NULL)
		return -1;
	if (is_set(cfg->tls_cert)) {
		snprintf(setting, sizeof(setting), "%s_TLS_CERT", cfg->prefix);
		if ((h->tls_cert = read_pem(setting, cfg->tls_cert, &cert_len, err, errlen)) == NULL)
			return -1;
		snprintf(setting, sizeof(setting), "%s_TLS_KEY", cfg->prefix);
		if ((h->tls_key = read_pem(setting, cfg->tls_key, &h->tls_key_len, err, errlen)) == NULL)
			return -1;
		*flags |= MHD_USE_TLS;
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls_cert };
		opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls_key };
	}
	opts[n] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
	return 0;
}

/* What bounds slow and greedy clients besides libmicrohttpd's own limits: the request deadline
 * and the rate limit per address. Fills h. */
static int
limits_setup(struct httpd *h, const struct httpd_config *cfg, char *err, size_t errlen)
{
	h->request_timeout_ms = cfg->request_timeout_ms;
	/* A kept-alive connection that sends nothing is closed by the idle timeout, conn_timeout_s
	 * after its answer. One that is still here a second later has sent part of a request line
	 * since, slowly: the sweep closes it. (The second keeps the two from racing over an idle
	 * connection, which would count it as cut off.) */
	h->wait_ms = cfg->conn_timeout_s * 1000 + 1000;
	if (cfg->request_timeout_ms > 0 &&
	    (h->deadlines = http_deadlines_new(cfg->request_timeout_ms, h->wait_ms)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* Registered now, so that /metrics shows them at 0. */
	metrics_counter("http_requests_cut_off_total", CUT_OFF_HELP, "phase", "headers", NULL);
	metrics_counter("http_requests_cut_off_total", CUT_OFF_HELP, "phase", "body", NULL);
	h->rate_limit = cfg->rate_limit;
	h->rate_limit_loopback = cfg->rate_limit_loopback;
	if (cfg->rate_limit > 0 && (h->rate = ratelimit_new(cfg->rate_limit, cfg->rate_burst)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/* On a loop: everything libmicrohttpd has to do after any wake-up of the loop (new connections,
 * data, resumed requests, timeouts); returns when it wants to run again. */
static long
loop_tick(void *arg)
{
	struct httpd *h = arg;
	MHD_UNSIGNED_LONG_LONG ms;

	if (atomic_load(&h->quiesce) && !atomic_load(&h->quiesced)) {
		h->listen_fd = MHD_quiesce_daemon(h->daemon);
		atomic_store(&h->quiesced, true);
	}
	(void)MHD_run(h->daemon);
	if (MHD_get_timeout(h->daemon, &ms) != MHD_YES)
		return -1;
	return ms > 1000 ? 1000 : (long)ms;
}

/* On a loop, when it stops: answers the requests its earlier stop functions resumed. */
static void
loop_stopped(void *arg)
{
	struct httpd *h = arg;

	for (int i = 0; i < 3; i++)
		(void)MHD_run(h->daemon);
}

/* Events on libmicrohttpd's epoll descriptor: the tick that follows runs it. */
static void
loop_io(void *arg, uint32_t events)
{
	(void)arg;
	(void)events;
}

static int
loop_attach(struct httpd *h, char *err, size_t errlen)
{
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_EPOLL_FD);

	if (di == NULL || evloop_watch(h->loop, di->epoll_fd, EPOLLIN, loop_io, h) != 0) {
		snprintf(err, errlen, "could not put the HTTP server on the event loop");
		return -1;
	}
	evloop_on_tick(h->loop, loop_tick, h);
	evloop_on_stop(h->loop, loop_stopped, h);
	return 0;
}

struct httpd *
httpd_start(const struct httpd_config *cfg, const struct http_route *routes, void *arg,
    http_ready_fn ready, void *ready_arg, char *err, size_t errlen)
{
	struct MHD_OptionItem tls_opts[3];
	unsigned flags = (cfg->loop != NULL ? MHD_USE_EPOLL : MHD_USE_EPOLL_INTERNAL_THREAD) |
	    MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	struct sockaddr_in sa;
	struct httpd *h;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)cfg->port);
	if (inet_pton(AF_INET, cfg->bind, &sa.sin_addr) != 1) {
		snprintf(err, errlen, "invalid listen address \"%s\"", cfg->bind);
		return NULL;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->routes = routes;
	h->arg = arg;
	h->ready = ready;
	h->ready_arg = ready_arg;
	h->m_ready = metrics_gauge("service_ready", "1 when /readyz answers 200, 0 when it answers "
	    "503; evaluated at each scrape of /metrics", NULL);
	h->max_body = cfg->max_body;
	h->loop = cfg->loop;
	h->listen_fd = MHD_INVALID_SOCKET;
	if (security_setup(h, cfg, tls_opts, &flags, err, errlen) != 0 ||
	    limits_setup(h, cfg, err, errlen) != 0) {
		httpd_free(h);
		return NULL;
	}
	h->daemon = MHD_start_daemon(flags,
	    (uint16_t)cfg->port, NULL, NULL, on_request, h,
	    /* First: libmicrohttpd prints what it says about the options before this one with its
	     * own logger, on stderr, a line outside the log's format. */
	    MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
	    MHD_OPTION_THREAD_POOL_SIZE, cfg->loop != NULL ? 0U : (unsigned int)cfg->threads,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->conn_timeout_s,
	    /* libmicrohttpd zeroes a connection's whole memory pool after every request: its default
	     * 32 KiB cost every answer a 32 KiB memset. 16 KiB still holds request headers of
	     * about 15 KiB (431 beyond). */
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg->max_connections,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)cfg->max_connections_per_ip,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
	    MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
	    MHD_OPTION_URI_LOG_CALLBACK, on_request_line, NULL,
	    MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, NULL,
	    MHD_OPTION_ARRAY, tls_opts,
	    MHD_OPTION_END);
	if (h->daemon == NULL) {
		snprintf(err, errlen, "could not listen on %s:%ld: %s", cfg->bind, cfg->port,
		    (flags & MHD_USE_TLS) != 0 ? "address in use or not available, or the certificate "
		    "and key are not a valid PEM pair" : errno ? strerror(errno) :
		    "address in use or not available");
		httpd_free(h);
		return NULL;
	}
	if (h->loop != NULL && loop_attach(h, err, errlen) != 0) {
		MHD_stop_daemon(h->daemon);
		httpd_free(h);
		return NULL;
	}
	if (h->deadlines != NULL) {
		if (pthread_create(&h->sweeper, NULL, deadline_sweeper, h) == 0)
			h->sweeper_started = true;
		else
			log_warnx("http: could not start the thread that enforces the request deadline; "
			    "only the idle timeout applies");
	}
	if (h->auth != NULL) {
		if (pthread_create(&h->reloader, NULL, tokens_reloader, h) == 0)
			h->reloader_started = true;
		else
			log_warnx("http: could not start the thread that reloads the tokens on SIGHUP");
		log_info("http: %s on %s:%ld, bearer tokens required (%zu from %s; SIGHUP rereads them)",
		    (flags & MHD_USE_TLS) != 0 ? "HTTPS" : "HTTP", cfg->bind, cfg->port,
		    auth_count(h->auth), cfg->tokens_file);
	} else {
		log_info("http: %s on %s:%ld without authentication (no API_TOKENS_FILE): loopback only",
		    (flags & MHD_USE_TLS) != 0 ? "HTTPS" : "HTTP", cfg->bind, cfg->port);
	}
	return h;
}

void
httpd_stop(struct httpd *h, long drain_ms)
{
	MHD_socket fd;
	int64_t deadline = mono_ms() + drain_ms;

	if (h == NULL)
		return;
	if (h->loop != NULL) {
		/* libmicrohttpd is the loop thread's: it quiesces there, and is stopped once the loop
		 * has (its stop functions resumed and answered what still waited). */
		atomic_store(&h->quiesce, true);
		evloop_wake(h->loop);
		while (atomic_load(&h->active) > 0 && mono_ms() < deadline)
			usleep(10 * 1000);
		evloop_stop(h->loop);
		fd = h->listen_fd;
	} else {
		fd = MHD_quiesce_daemon(h->daemon);
		while (atomic_load(&h->active) > 0 && mono_ms() < deadline)
			usleep(10 * 1000);
	}
	/* A bug of the caller, which libmicrohttpd answers with abort(): say what it was first. */
	if (atomic_load(&h->suspended) > 0)
		log_warnx("http: %d requests still suspended at stop", atomic_load(&h->suspended));
	MHD_stop_daemon(h->daemon);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	atomic_store(&h->stopping, true);
	if (h->reloader_started)
		pthread_join(h->reloader, NULL);
	if (h->sweeper_started)
		pthread_join(h->sweeper, NULL);
	httpd_free(h);
}
