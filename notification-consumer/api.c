/* GET /notifications, /notifications/user/{id} (with read-your-writes through min_version) and
 * /notifications/user/{id}/events (?include=superseded). */
#include "api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "util.h"

#define LIMIT_DEFAULT 100
#define LIMIT_MAX 1000

static void
reply_store_down(struct http_request *req, const char *err)
{
	http_add_header(req, "Retry-After", "1");
	http_reply_problem(req, 503, NULL, "%s", err);
}

static void
list_users(struct http_request *req, void *arg)
{
	struct api *api = arg;
	const char *qlimit = http_query(req, "limit"), *qafter = http_query(req, "after");
	long limit = LIMIT_DEFAULT;
	int64_t after = 0;
	json_t *arr = NULL;
	char err[512];

	if (qlimit != NULL && config_parse_long(qlimit, 1, LIMIT_MAX, &limit) != 0) {
		http_reply_problem(req, 400, "limit", "limit \"%s\" is not a whole number from 1 to %d",
		    qlimit, LIMIT_MAX);
		return;
	}
	if (qafter != NULL && strcmp(qafter, "0") != 0 && !http_parse_id(qafter, &after)) {
		http_reply_problem(req, 400, "after", "after \"%s\" is not a user id", qafter);
		return;
	}
	/* One more than asked tells whether a next page exists. */
	if (store_list_users(api->store, after, limit + 1, &arr, err, sizeof(err)) != 0) {
		reply_store_down(req, err);
		return;
	}
	if ((long)json_array_size(arr) > limit) {
		char link[128];
		json_t *last;

		json_array_remove(arr, (size_t)limit);
		last = json_array_get(arr, (size_t)limit - 1);
		snprintf(link, sizeof(link), "</notifications?after=%" PRId64 "&limit=%ld>; rel=\"next\"",
		    (int64_t)json_integer_value(json_object_get(last, "user_id")), limit);
		http_add_header(req, "Link", link);
	}
	for (size_t i = 0; i < json_array_size(arr); i++)
		json_object_del(json_array_get(arr, i), "deleted");
	http_reply_json(req, 200, arr);
}

static bool
parse_user_id(struct http_request *req, int64_t *id)
{
	if (!http_parse_id(http_param(req, 0), id)) {
		http_reply_problem(req, 404, NULL, "no user \"%s\"", http_param(req, 0));
		return false;
	}
	return true;
}

static void
get_user(struct http_request *req, void *arg)
{
	struct api *api = arg;
	const char *qmin = http_query(req, "min_version"), *qwait = http_query(req, "wait");
	long min_version = 0, wait_ms = api->wait_max_ms;
	int64_t id, deadline, version = 0;
	json_t *doc = NULL;
	char err[512], etag[40], *body;

	if (!parse_user_id(req, &id))
		return;
	if (qmin != NULL && config_parse_long(qmin, 1, INT64_MAX, &min_version) != 0) {
		http_reply_problem(req, 400, "min_version", "min_version \"%s\" is not a positive version",
		    qmin);
		return;
	}
	if (qwait != NULL && config_parse_ms(qwait, 0, api->wait_max_ms, &wait_ms) != 0) {
		http_reply_problem(req, 400, "wait", "wait \"%s\" is not a duration from 0 to %ldms",
		    qwait, api->wait_max_ms);
		return;
	}
	deadline = mono_ms() + wait_ms;
	for (;;) {
		json_decref(doc);
		if (store_get_user(api->store, id, &doc, err, sizeof(err)) != 0) {
			reply_store_down(req, err);
			return;
		}
		version = doc != NULL ? json_integer_value(json_object_get(doc, "version")) : 0;
		if (min_version == 0 || version >= min_version || mono_ms() >= deadline ||
		    shutdown_requested())
			break;
		/* Woken by every applied event; the timeout also covers writes made by a replay. */
		applier_wait_applied(api->applier, 100);
	}
	if (min_version > 0 && version < min_version) {
		json_t *p = json_pack("{s:s, s:s, s:i, s:s, s:I, s:I, s:s}", "type", "about:blank",
		    "title", "Gateway Timeout", "status", 504, "detail", "", "min_version",
		    (json_int_t)min_version, "version", (json_int_t)version, "request_id",
		    http_request_id(req));
		char detail[160];

		snprintf(detail, sizeof(detail), "user %" PRId64 " is at version %" PRId64
		    ", not yet %ld after %ldms", id, version, min_version, wait_ms);
		json_object_set_new(p, "detail", json_string(detail));
		json_decref(doc);
		body = json_dumps(p, JSON_COMPACT);
		json_decref(p);
		http_add_header(req, "Retry-After", "1");
		if (body == NULL) {
			http_reply_problem(req, 504, NULL, "%s", detail);
			return;
		}
		http_reply_text(req, 504, "application/problem+json", body, strlen(body));
		free(body);
		return;
	}
	if (doc == NULL || json_is_true(json_object_get(doc, "deleted"))) {
		json_decref(doc);
		http_reply_problem(req, 404, NULL, "no user %" PRId64, id);
		return;
	}
	json_object_del(doc, "deleted");
	snprintf(etag, sizeof(etag), "\"%" PRId64 "\"", version);
	http_add_header(req, "ETag", etag);
	http_reply_json(req, 200, doc);
}

static void
list_events(struct http_request *req, void *arg)
{
	struct api *api = arg;
	const char *qinclude = http_query(req, "include");
	json_t *arr = NULL;
	int64_t id;
	char err[512];

	if (!parse_user_id(req, &id))
		return;
	/* Applied events only by default: each version once, in order. Superseded ones (stale when
	 * they arrived, no effect) only on request, so a list never shows a version twice unasked. */
	if (qinclude != NULL && strcmp(qinclude, "superseded") != 0) {
		http_reply_problem(req, 400, "include", "include \"%s\" is not known; the one value is "
		    "superseded", qinclude);
		return;
	}
	if (store_list_events(api->store, id, qinclude != NULL, &arr, err, sizeof(err)) != 0) {
		reply_store_down(req, err);
		return;
	}
	if (json_array_size(arr) == 0) {
		json_decref(arr);
		http_reply_problem(req, 404, NULL, "no events for user %" PRId64, id);
		return;
	}
	http_reply_json(req, 200, arr);
}

const struct http_route api_routes[] = {
	{ "GET", "/notifications", list_users },
	{ "GET", "/notifications/user/{}", get_user },
	{ "GET", "/notifications/user/{}/events", list_events },
	{ NULL, NULL, NULL },
};
