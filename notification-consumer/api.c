/* GET /notifications, /notifications/user/{id} (with read-your-writes through min_version) and
 * /notifications/user/{id}/events (?include=superseded). */
#include "api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "http_page.h"
#include "util.h"

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
	struct http_page page;
	json_t *arr = NULL;
	char err[512];

	if (!http_page_read(&page, req))
		return;
	/* One more than asked tells whether a next page exists. */
	if (store_list_users(api->store, page.after, page.limit + 1, &arr, err, sizeof(err)) != 0) {
		reply_store_down(req, err);
		return;
	}
	if (http_page_has_next(&page, (int64_t)json_array_size(arr))) {
		json_t *last;

		json_array_remove(arr, (size_t)page.limit);
		last = json_array_get(arr, (size_t)page.limit - 1);
		http_page_link_next(&page, req, "/notifications",
		    (int64_t)json_integer_value(json_object_get(last, "user_id")));
	}
	for (size_t i = 0; i < json_array_size(arr); i++)
		json_object_del(json_array_get(arr, i), "deleted");
	http_reply_json(req, 200, arr);
}

static void
get_user(struct http_request *req, void *arg)
{
	struct api *api = arg;
	const char *qmin = http_query(req, "min_version"), *qwait = http_query(req, "wait");
	long min_version = 0, wait_ms = api->wait_max_ms;
	int64_t id, deadline, version = 0;
	json_t *doc = NULL;
	char err[512], etag[40];

	if (!http_path_id(req, 0, "user", &id))
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
		json_decref(doc);
		http_add_header(req, "Retry-After", "1");
		http_reply_problem_with(req, 504, NULL, json_pack("{s:I, s:I}", "min_version",
		    (json_int_t)min_version, "version", (json_int_t)version), "user %" PRId64 " is at "
		    "version %" PRId64 ", not yet %ld after %ldms", id, version, min_version, wait_ms);
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

	if (!http_path_id(req, 0, "user", &id))
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
