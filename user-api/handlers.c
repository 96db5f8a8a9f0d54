/* REST handlers for users: check the request, call the store, map its result to HTTP. */
#include "handlers.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "failpoint.h"
#include "http_page.h"
#include "log.h"
#include "nudge.h"
#include "traceparent.h"
#include "user_input.h"
#include "user_store.h"
#include "write_headers.h"

static void
reply_store_error(struct http_request *req, enum user_store_result rc, const char *err)
{
	char shown[128];

	switch (rc) {
	case USER_STORE_NOT_FOUND:
		http_reply_problem(req, 404, NULL, "%s", err);
		break;
	case USER_STORE_EMAIL_TAKEN:
		http_reply_problem(req, 409, "email", "%s", err);
		break;
	case USER_STORE_STALE:
		http_reply_problem(req, 412, NULL, "If-Match does not match: %s", err);
		break;
	case USER_STORE_KEY_REUSED:
		http_reply_problem(req, 422, "Idempotency-Key",
		    "this Idempotency-Key was used with another body");
		break;
	case USER_STORE_UNAVAILABLE:
		http_add_header(req, "Retry-After", "1");
		log_warnx("%s %s: %s rid=%s", http_method(req), http_path(req), err, http_request_id(req));
		error_headline(err, shown, sizeof(shown));
		http_reply_problem(req, 503, NULL, "the user store is unavailable: %s", shown);
		break;
	case USER_STORE_OK:
	case USER_STORE_ERROR:
		log_error("%s %s: %s rid=%s", http_method(req), http_path(req), err, http_request_id(req));
		http_reply_problem(req, 500, NULL, "the request could not be completed");
		break;
	}
}

static bool
is_json_type(const char *ct)
{
	size_t n = strlen("application/json");

	if (ct == NULL)
		return false;
	while (*ct == ' ')
		ct++;
	return strncasecmp(ct, "application/json", n) == 0 &&
	    (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Checks the content type and parses the body; replies and returns false on any problem. */
static bool
read_user_body(struct http_request *req, struct user_input *in)
{
	struct input_error e;
	const char *body;
	size_t len;

	if (!is_json_type(http_header(req, "Content-Type"))) {
		http_reply_problem(req, 415, NULL, "the body must be application/json");
		return false;
	}
	body = http_body(req, &len);
	if (user_input_parse(body, len, in, &e) != 0) {
		http_reply_problem(req, e.status, e.field[0] ? e.field : NULL, "%s", e.detail);
		return false;
	}
	return true;
}

static void
write_meta_init(struct http_request *req, struct write_meta *m, char traceparent[56],
    char if_match[IF_MATCH_MAX])
{
	const char *tp = http_header(req, "traceparent");

	if (tp != NULL && traceparent_valid(tp)) {
		memcpy(traceparent, tp, 56);	/* valid: 55 characters and its NUL */
	} else {
		traceparent_new(traceparent);
		http_log_trace(req, traceparent);	/* the trace the event starts */
	}
	m->traceparent = traceparent;
	m->idempotency_key = NULL;
	m->if_match = if_match_versions(http_header(req, "If-Match"), if_match, IF_MATCH_MAX);
}

static void
set_etag(struct http_request *req, int64_t version)
{
	char etag[32];

	snprintf(etag, sizeof(etag), "\"%lld\"", (long long)version);
	http_add_header(req, "ETag", etag);
}

static void
after_commit(void)
{
	(void)FAILPOINT("api.after_commit_before_response");
	nudge_send();
}

/* A request waiting for the store: its call, freed with the request. */
struct pending {
	struct user_store_call call;
	struct http_request *req;
	struct http_page page;		/* GET /users */
};

/* Calls are a few kilobytes, too large for malloc's per-thread cache: the ended ones are kept
 * for the next requests. Every handler runs on the loop's one thread (handlers.h), so one list
 * serves; it is not thread-local because the loop's thread ends before the process, and its
 * thread-local list would then be memory nobody can reach, which LeakSanitizer reports at exit
 * (every user-api test scans for that). */
#define PENDING_KEPT 64

static struct pending *kept[PENDING_KEPT];
static size_t nkept;

static void
pending_free(void *p)
{
	user_result_release(&((struct pending *)p)->call.res);
	if (nkept < PENDING_KEPT)
		kept[nkept++] = p;
	else
		free(p);
}

static void
call_done(struct user_store_call *c)
{
	http_resume(((struct pending *)c->arg)->req);
}

/* Suspends the request until its call on the store ends, then answer(req) runs with the call in
 * http_context(); NULL (answered 500) when memory runs out. */
static struct user_store_call *
call_begin(struct http_request *req, http_handler_fn answer)
{
	/* Not zeroed: the store sets what it reads. */
	struct pending *p = nkept > 0 ? kept[--nkept] : malloc(sizeof(*p));

	if (p == NULL) {
		http_reply_problem(req, 500, NULL, "the request could not be completed: out of memory");
		return NULL;
	}
	p->req = req;
	p->call.res = (struct user_result){ 0 };
	p->call.done = call_done;
	p->call.arg = p;
	http_set_context(req, p, pending_free);
	http_suspend(req, answer);
	return &p->call;
}

/* The call that ended, in a resumed handler; NULL (answered) when it failed. */
static struct user_store_call *
call_ended(struct http_request *req)
{
	struct user_store_call *c = &((struct pending *)http_context(req))->call;
	int64_t user = c->id > 0 ? c->id : c->rc == USER_STORE_OK ? c->res.id : 0;

	/* The user it is about, on the lines of its answer (LOG_FORMAT=json): of its path, or the
	 * one created. */
	if (user > 0)
		log_scope_set_int(LOG_ID_USER, user);

	if (c->rc != USER_STORE_OK) {
		reply_store_error(req, c->rc, c->err);
		return NULL;
	}
	return c;
}

static void
users_created(struct http_request *req, void *arg)
{
	struct user_store_call *c = call_ended(req);
	char location[48];

	(void)arg;
	if (c == NULL)
		return;
	if (c->res.status != 0) {
		/* A replay: the stored answer, with the version read back from it for the ETag. */
		json_t *j = json_loads(c->res.json, 0, NULL);

		if (j != NULL)
			set_etag(req, json_integer_value(json_object_get(j, "version")));
		json_decref(j);
		http_add_header(req, "Idempotent-Replayed", "true");
	} else {
		set_etag(req, c->res.version);
		after_commit();
		log_info("created user %lld rid=%s", (long long)c->res.id, http_request_id(req));
	}
	snprintf(location, sizeof(location), "/users/%lld", (long long)c->res.id);
	http_add_header(req, "Location", location);
	http_reply_text(req, c->res.status ? c->res.status : 201, "application/json", c->res.json,
	    strlen(c->res.json));
}

static void
users_create(struct http_request *req, void *store)
{
	struct user_input in;
	struct write_meta m;
	struct user_store_call *c;
	char traceparent[56], if_match[IF_MATCH_MAX];

	write_meta_init(req, &m, traceparent, if_match);
	m.if_match = NULL;
	m.idempotency_key = http_header(req, "Idempotency-Key");
	if (m.idempotency_key != NULL && !idempotency_key_valid(m.idempotency_key)) {
		http_reply_problem(req, 400, "Idempotency-Key",
		    "Idempotency-Key must be 1 to %d printable ASCII characters", IDEMPOTENCY_KEY_MAX);
		return;
	}
	if (!read_user_body(req, &in) || (c = call_begin(req, users_created)) == NULL)
		return;
	user_store_create(store, c, &in, &m);
}

/* The answer of PUT, and of GET: the user with its ETag. */
static void
user_answered(struct http_request *req, void *arg)
{
	struct user_store_call *c = call_ended(req);

	(void)arg;
	if (c == NULL)
		return;
	set_etag(req, c->res.version);
	http_reply_text(req, 200, "application/json", c->res.json, strlen(c->res.json));
}

static void
users_updated(struct http_request *req, void *arg)
{
	if (((struct pending *)http_context(req))->call.rc == USER_STORE_OK)
		after_commit();
	user_answered(req, arg);
}

static void
users_update(struct http_request *req, void *store)
{
	struct user_input in;
	struct write_meta m;
	struct user_store_call *c;
	char traceparent[56], if_match[IF_MATCH_MAX];
	int64_t id;

	if (!http_path_id(req, 0, "user", &id) || !read_user_body(req, &in))
		return;
	write_meta_init(req, &m, traceparent, if_match);
	if ((c = call_begin(req, users_updated)) != NULL)
		user_store_update(store, c, id, &in, &m);
}

static void
users_deleted(struct http_request *req, void *arg)
{
	struct user_store_call *c = call_ended(req);

	(void)arg;
	if (c == NULL)
		return;
	after_commit();
	log_info("deleted user %lld rid=%s", (long long)c->id, http_request_id(req));
	http_reply_empty(req, 204);
}

static void
users_delete(struct http_request *req, void *store)
{
	struct write_meta m;
	struct user_store_call *c;
	char traceparent[56], if_match[IF_MATCH_MAX];
	int64_t id;

	if (!http_path_id(req, 0, "user", &id))
		return;
	write_meta_init(req, &m, traceparent, if_match);
	if ((c = call_begin(req, users_deleted)) != NULL)
		user_store_delete(store, c, id, &m);
}

static void
users_get(struct http_request *req, void *store)
{
	struct user_store_call *c;
	int64_t id;

	if (http_path_id(req, 0, "user", &id) && (c = call_begin(req, user_answered)) != NULL)
		user_store_find(store, c, id);
}

static void
users_listed(struct http_request *req, void *arg)
{
	struct user_store_call *c = call_ended(req);
	const struct http_page *page = &((struct pending *)http_context(req))->page;

	(void)arg;
	if (c == NULL)
		return;
	if (http_page_has_next(page, c->res.fetched))
		http_page_link_next(page, req, "/users", c->res.last_id);
	http_reply_text(req, 200, "application/json", c->res.json, strlen(c->res.json));
}

static void
users_list(struct http_request *req, void *store)
{
	struct http_page page;
	struct user_store_call *c;

	if (http_page_read(&page, req) && (c = call_begin(req, users_listed)) != NULL) {
		((struct pending *)c->arg)->page = page;
		user_store_list(store, c, page.after, page.limit);
	}
}

const struct http_route user_api_routes[] = {
	{ "GET", "/users", users_list },
	{ "POST", "/users", users_create },
	{ "GET", "/users/{}", users_get },
	{ "PUT", "/users/{}", users_update },
	{ "DELETE", "/users/{}", users_delete },
	{ NULL, NULL, NULL },
};

bool
user_api_ready(void *store, json_t **out)
{
	char err[512] = "", shown[128];
	bool ok = user_store_ready(store, err, sizeof(err));

	error_headline(err, shown, sizeof(shown));
	*out = json_pack("{s:{s:s, s:s}}", "postgres", "status", ok ? "up" : "down",
	    "detail", ok ? "reachable" : shown);
	return ok;
}
