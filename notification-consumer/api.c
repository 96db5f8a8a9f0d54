/* GET /notifications, /notifications/user/{id} (with read-your-writes through min_version) and
 * /notifications/user/{id}/events (?include=superseded). */
#include "api.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "failpoint.h"
#include "http_page.h"
#include "log.h"
#include "util.h"

static void
reply_store_down(struct http_request *req, const char *err)
{
	char shown[128];

	/* The driver's words stay in the log. */
	log_warnx("%s %s: %s rid=%s", http_method(req), http_path(req), err, http_request_id(req));
	error_headline(err, shown, sizeof(shown));
	http_add_header(req, "Retry-After", "1");
	http_reply_problem(req, 503, NULL, "%s", shown);
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

/* A read of one user, the request's context: it outlives the suspensions of its wait. */
struct user_read {
	int64_t id;
	long min_version;		/* 0: no wait */
	long wait_ms;
	int64_t deadline_ms;		/* mono_ms() */
	enum wait_outcome outcome;	/* why the wait ended, set before the request resumes */
};

/* Takes over doc: the user at version, or 404 for none and for a tombstone. */
static void
reply_user(struct http_request *req, const struct user_read *rd, json_t *doc, int64_t version)
{
	char etag[40];

	if (doc == NULL || json_is_true(json_object_get(doc, "deleted"))) {
		json_decref(doc);
		http_reply_problem(req, 404, NULL, "no user %" PRId64, rd->id);
		return;
	}
	json_object_del(doc, "deleted");
	snprintf(etag, sizeof(etag), "\"%" PRId64 "\"", version);
	http_add_header(req, "ETag", etag);
	http_reply_json(req, 200, doc);
}

/* The members a read that waited, or could not, answers besides the detail: the version asked
 * for, and the copy's when it is known (version >= 0). A new reference. */
static json_t *
wait_extra(const struct user_read *rd, int64_t version)
{
	json_t *extra = json_pack("{s:I}", "min_version", (json_int_t)rd->min_version);

	if (extra != NULL && version >= 0)
		json_object_set_new(extra, "version", json_integer(version));
	return extra;
}

/* 504: the wait ended before the copy reached the version. */
static void
reply_wait_over(struct http_request *req, const struct user_read *rd, int64_t version)
{
	http_add_header(req, "Retry-After", "1");
	http_reply_problem_with(req, 504, NULL, wait_extra(rd, version), "user %" PRId64 " is at "
	    "version %" PRId64 ", not yet %ld after %ldms", rd->id, version, rd->min_version,
	    rd->wait_ms);
}

/* 503: the read may not wait (or wait on): too many wait, or the process stops. */
static void
reply_cannot_wait(struct http_request *req, const struct user_read *rd, int64_t version,
    const char *why)
{
	http_add_header(req, "Retry-After", "1");
	http_reply_problem_with(req, 503, NULL, wait_extra(rd, version), "could not wait for version "
	    "%ld of user %" PRId64 ": %s", rd->min_version, rd->id, why);
}

static void user_resumed(struct http_request *req, void *arg);

/* Answers rd once the copy is at rd->min_version (at once without one), or 504 at the deadline;
 * until then the request waits suspended, holding no worker thread, and user_resumed() comes
 * back here. rd is the request's context. */
static void
read_user(struct http_request *req, struct api *api, struct user_read *rd)
{
	struct waiter *wt = NULL;
	enum wait_refusal refusal;
	int64_t version;
	json_t *doc;
	char err[512], why[96];

	for (;;) {
		if (store_get_user(api->store, rd->id, &doc, err, sizeof(err)) != 0) {
			if (wt != NULL)
				waiters_leave(api->waiters, wt);
			reply_store_down(req, err);
			return;
		}
		version = doc != NULL ? json_integer_value(json_object_get(doc, "version")) : 0;
		if (version >= rd->min_version || mono_ms() >= rd->deadline_ms) {
			if (wt != NULL)
				waiters_leave(api->waiters, wt);
			if (version < rd->min_version) {
				json_decref(doc);
				reply_wait_over(req, rd, version);
				return;
			}
			reply_user(req, rd, doc, version);
			return;
		}
		json_decref(doc);
		if (wt == NULL) {
			/* In place before the copy is read again: a version confirmed after the read
			 * above and before this wakes it, instead of being missed. (The failpoint widens
			 * that window for a test.) */
			FAILPOINT("consumer.read_before_wait");
			wt = waiters_enter(api->waiters, rd->id, rd->min_version, rd->deadline_ms,
			    &refusal);
			if (wt == NULL) {
				if (refusal == WAIT_FULL)
					snprintf(why, sizeof(why), "%ld reads are waiting already "
					    "(CONSUMER_MAX_WAITERS)", api->max_waiters);
				else
					snprintf(why, sizeof(why), "the server is shutting down");
				reply_cannot_wait(req, rd, version, why);
				return;
			}
			continue;
		}
		if (waiters_suspend(api->waiters, wt, req, user_resumed, &rd->outcome))
			return;
		/* Woken before it was suspended: read again, unless the process stops. */
		wt = NULL;
		if (rd->outcome == WAIT_SHUTDOWN) {
			reply_cannot_wait(req, rd, -1, "the server is shutting down");
			return;
		}
	}
}

/* The request of read_user(), resumed: the version came, the deadline, or shutdown. */
static void
user_resumed(struct http_request *req, void *arg)
{
	struct user_read *rd = http_context(req);

	if (rd->outcome == WAIT_SHUTDOWN) {
		reply_cannot_wait(req, rd, -1, "the server is shutting down");
		return;
	}
	read_user(req, arg, rd);
}

static void
get_user(struct http_request *req, void *arg)
{
	struct api *api = arg;
	const char *qmin = http_query(req, "min_version"), *qwait = http_query(req, "wait");
	struct user_read *rd;
	long wait_ms = api->wait_max_ms;
	int64_t id, min_version = 0;

	if (!http_path_id(req, 0, "user", &id))
		return;
	/* Written as ids and page parameters are, without a sign or spaces (http_parse_id()), and
	 * wait as its description says, digits first: the settings' parsers would take " +5". */
	if (qmin != NULL && !http_parse_id(qmin, &min_version)) {
		http_reply_problem(req, 400, "min_version", "min_version \"%s\" is not a positive version",
		    qmin);
		return;
	}
	if (qwait != NULL && (!isdigit((unsigned char)qwait[0]) ||
	    config_parse_ms(qwait, 0, api->wait_max_ms, &wait_ms) != 0)) {
		http_reply_problem(req, 400, "wait", "wait \"%s\" is not a duration from 0 to %ldms",
		    qwait, api->wait_max_ms);
		return;
	}
	if ((rd = calloc(1, sizeof(*rd))) == NULL) {
		http_reply_problem(req, 500, NULL, "could not read user %" PRId64 ": out of memory", id);
		return;
	}
	*rd = (struct user_read){ id, min_version, wait_ms, mono_ms() + wait_ms, WAIT_REACHED };
	http_set_context(req, rd, free);
	read_user(req, api, rd);
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
