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

	if (tp != NULL && traceparent_valid(tp))
		snprintf(traceparent, 56, "%s", tp);
	else
		traceparent_new(traceparent);
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

static void
users_create(struct http_request *req, void *arg)
{
	struct user_input in;
	struct user_result res;
	struct write_meta m;
	char traceparent[56], location[48], err[512], if_match[IF_MATCH_MAX];
	enum user_store_result rc;

	(void)arg;
	write_meta_init(req, &m, traceparent, if_match);
	m.if_match = NULL;
	m.idempotency_key = http_header(req, "Idempotency-Key");
	if (m.idempotency_key != NULL && !idempotency_key_valid(m.idempotency_key)) {
		http_reply_problem(req, 400, "Idempotency-Key",
		    "Idempotency-Key must be 1 to %d printable ASCII characters", IDEMPOTENCY_KEY_MAX);
		return;
	}
	if (!read_user_body(req, &in))
		return;
	rc = user_store_create(user_store_get(), &in, &m, &res, err, sizeof(err));
	if (rc != USER_STORE_OK) {
		reply_store_error(req, rc, err);
		return;
	}
	if (res.status != 0) {
		/* A replay: the stored answer, with the version read back from it for the ETag. */
		json_t *j = json_loads(res.json, 0, NULL);

		if (j != NULL)
			set_etag(req, json_integer_value(json_object_get(j, "version")));
		json_decref(j);
		http_add_header(req, "Idempotent-Replayed", "true");
	} else {
		set_etag(req, res.version);
		after_commit();
		log_info("created user %lld rid=%s", (long long)res.id, http_request_id(req));
	}
	snprintf(location, sizeof(location), "/users/%lld", (long long)res.id);
	http_add_header(req, "Location", location);
	http_reply_text(req, res.status ? res.status : 201, "application/json", res.json, strlen(res.json));
	user_result_release(&res);
}

static void
users_update(struct http_request *req, void *arg)
{
	struct user_input in;
	struct user_result res;
	struct write_meta m;
	char traceparent[56], err[512], if_match[IF_MATCH_MAX];
	enum user_store_result rc;
	int64_t id;

	(void)arg;
	if (!http_path_id(req, 0, "user", &id) || !read_user_body(req, &in))
		return;
	write_meta_init(req, &m, traceparent, if_match);
	rc = user_store_update(user_store_get(), id, &in, &m, &res, err, sizeof(err));
	if (rc != USER_STORE_OK) {
		reply_store_error(req, rc, err);
		return;
	}
	after_commit();
	set_etag(req, res.version);
	http_reply_text(req, 200, "application/json", res.json, strlen(res.json));
	user_result_release(&res);
}

static void
users_delete(struct http_request *req, void *arg)
{
	struct write_meta m;
	char traceparent[56], err[512], if_match[IF_MATCH_MAX];
	enum user_store_result rc;
	int64_t id;

	(void)arg;
	if (!http_path_id(req, 0, "user", &id))
		return;
	write_meta_init(req, &m, traceparent, if_match);
	rc = user_store_delete(user_store_get(), id, &m, err, sizeof(err));
	if (rc != USER_STORE_OK) {
		reply_store_error(req, rc, err);
		return;
	}
	after_commit();
	log_info("deleted user %lld rid=%s", (long long)id, http_request_id(req));
	http_reply_empty(req, 204);
}

static void
users_get(struct http_request *req, void *arg)
{
	struct user_result res;
	char err[512];
	enum user_store_result rc;
	int64_t id;

	(void)arg;
	if (!http_path_id(req, 0, "user", &id))
		return;
	rc = user_store_find(user_store_get(), id, &res, err, sizeof(err));
	if (rc != USER_STORE_OK) {
		reply_store_error(req, rc, err);
		return;
	}
	set_etag(req, res.version);
	http_reply_text(req, 200, "application/json", res.json, strlen(res.json));
	user_result_release(&res);
}

static void
users_list(struct http_request *req, void *arg)
{
	struct http_page page;
	struct user_result res;
	char err[512];
	enum user_store_result rc;

	(void)arg;
	if (!http_page_read(&page, req))
		return;
	rc = user_store_list(user_store_get(), page.after, page.limit, &res, err, sizeof(err));
	if (rc != USER_STORE_OK) {
		reply_store_error(req, rc, err);
		return;
	}
	if (http_page_has_next(&page, res.fetched))
		http_page_link_next(&page, req, "/users", res.last_id);
	http_reply_text(req, 200, "application/json", res.json, strlen(res.json));
	user_result_release(&res);
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
user_api_ready(void *arg, json_t **out)
{
	char err[512] = "", shown[128];
	enum user_store_result rc = user_store_ping(user_store_get(), err, sizeof(err));

	(void)arg;
	error_headline(err, shown, sizeof(shown));
	*out = json_pack("{s:{s:s, s:s}}", "postgres", "status", rc == USER_STORE_OK ? "up" : "down",
	    "detail", rc == USER_STORE_OK ? "reachable" : shown);
	return rc == USER_STORE_OK;
}
