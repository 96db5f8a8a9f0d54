/* Turns a JetStream message body into a validated event, or says why it is poison. */
#include "event.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "utf8.h"
#include "util.h"

static int
digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

/* Days in month mo (1..12) of year y, of the Gregorian calendar. */
static int
days_in_month(int y, int mo)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);

	return mo == 2 && leap ? 29 : days[mo - 1];
}

bool
rfc3339_parse(const char *s, int64_t *us)
{
	int y, mo, d, h, mi, sec, oh = 0, om = 0;
	int64_t frac = 0;
	const char *p;
	struct tm tm;
	time_t t;
	int scale = 1000000;

	if (s == NULL || strlen(s) < 20)
		return false;
	if (digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
	    digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &h) ||
	    s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' || digits(s + 17, 2, &sec))
		return false;
	/* timegm() would take February 31 for March 3: an impossible date is refused, not moved. */
	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
		return false;
	p = s + 19;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return false;
		for (; isdigit((unsigned char)*p); p++) {
			if (scale > 1) {
				scale /= 10;
				frac += (int64_t)(*p - '0') * scale;
			}
		}
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p == '-' ? -1 : 1;

		if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59)
			return false;
		oh *= sign;
		om *= sign;
		p += 6;
	} else {
		return false;
	}
	if (*p != '\0')
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return false;
	t -= oh * 3600 + om * 60;
	*us = (int64_t)t * 1000000 + frac;
	return true;
}

static int
get_int(json_t *obj, const char *key, int64_t *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL) {
		snprintf(err, errlen, "missing field \"%s\"", key);
		return -1;
	}
	if (!json_is_integer(v)) {
		snprintf(err, errlen, "field \"%s\" is not an integer", key);
		return -1;
	}
	*out = json_integer_value(v);
	return 0;
}

static const char *
get_string(json_t *obj, const char *key, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL) {
		snprintf(err, errlen, "missing field \"%s\"", key);
		return NULL;
	}
	if (!json_is_string(v)) {
		snprintf(err, errlen, "field \"%s\" is not a string", key);
		return NULL;
	}
	return json_string_value(v);
}

static int
get_time(json_t *obj, const char *key, char out[40], int64_t *us, char *err, size_t errlen)
{
	const char *s = get_string(obj, key, err, errlen);
	int64_t ignored;

	if (s == NULL)
		return -1;
	if (strlen(s) >= 40 || !rfc3339_parse(s, us ? us : &ignored)) {
		snprintf(err, errlen, "field \"%s\" is not an RFC 3339 time: \"%.*s\"", key,
		    (int)utf8_prefix(s, 60), s);
		return -1;
	}
	strcpy(out, s);
	return 0;
}

static int
parse_payload(json_t *p, struct event *ev, char *err, size_t errlen)
{
	const char *name, *email;
	json_t *del;

	if (!json_is_object(p)) {
		snprintf(err, errlen, "field \"payload\" is not an object");
		return -1;
	}
	if (get_int(p, "id", &ev->user_id, err, errlen) != 0 ||
	    get_int(p, "version", &ev->version, err, errlen) != 0)
		return -1;
	if (ev->user_id <= 0) {
		snprintf(err, errlen, "payload id %lld is not positive", (long long)ev->user_id);
		return -1;
	}
	if (ev->version <= 0) {
		snprintf(err, errlen, "payload version %lld is not positive", (long long)ev->version);
		return -1;
	}
	if (get_time(p, "updated_at", ev->updated_at, NULL, err, errlen) != 0)
		return -1;
	del = json_object_get(p, "deleted");
	if (del == NULL) {
		snprintf(err, errlen, "missing field \"deleted\"");
		return -1;
	}
	if (!json_is_boolean(del)) {
		snprintf(err, errlen, "field \"deleted\" is not a boolean");
		return -1;
	}
	ev->deleted = json_is_true(del);
	if (ev->deleted != (ev->kind == EVENT_DELETED)) {
		snprintf(err, errlen, "%s event with \"deleted\": %s", ev->type,
		    ev->deleted ? "true" : "false");
		return -1;
	}
	/* A deletion's name and email are not read: version 3 leaves them out, and where an older
	 * producer still sent them they are read past, never checked, kept or stored. */
	if (ev->kind == EVENT_DELETED)
		return 0;
	if ((name = get_string(p, "name", err, errlen)) == NULL ||
	    (email = get_string(p, "email", err, errlen)) == NULL)
		return -1;
	/* Control characters by the one definition user-api refuses them with (common/utf8.h), which
	 * it always did: an event holding one was not written by user-api. Bidirectional formatting,
	 * invisible characters and line separators, which user-api accepted before it refused them,
	 * are read: the event holds what PostgreSQL holds, and the copy must follow it
	 * (docs/events.md). */
	if (utf8_find(name, strlen(name), UTF8_MASK(UTF8_CONTROL), NULL) ||
	    utf8_find(email, strlen(email), UTF8_MASK(UTF8_CONTROL), NULL)) {
		snprintf(err, errlen, "payload name or email holds a control character");
		return -1;
	}
	ev->name = strdup(name);
	ev->email = strdup(email);
	if (ev->name == NULL || ev->email == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

/* Version 1 to version 2, in place: "deleted" was present (true) on a deletion only, and version 2
 * always carries it, so an absent one becomes false. A version 1 deletion without it stays poison
 * (parse_payload() checks "deleted" against the type). */
static int
upcast_v1(json_t *root, char *err, size_t errlen)
{
	json_t *p = json_object_get(root, "payload");

	if (!json_is_object(p))
		return 0;	/* parse_payload() says what is wrong */
	if (json_object_get(p, "deleted") == NULL &&
	    json_object_set_new(p, "deleted", json_false()) != 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static int parse(const char *data, size_t len, const char *subject, struct event *ev, char *err,
    size_t errlen);

int
event_parse(const char *data, size_t len, const char *subject, struct event *ev, char *err,
    size_t errlen)
{
	char raw[1024];

	if (parse(data, len, subject, ev, raw, sizeof(raw)) == 0)
		return 0;
	/* The reason quotes the event (a type, an id, a time, jansson's view of the body) and goes
	 * to the log and the dead letter's headers: escaped as a log line is, it is valid UTF-8
	 * and holds no control byte, whatever the event held. */
	log_escape(err, errlen, raw, strlen(raw));
	return -1;
}

static int
parse(const char *data, size_t len, const char *subject, struct event *ev, char *err,
    size_t errlen)
{
	const struct event_kind_info *kind;
	json_error_t jerr;
	json_t *root;
	const char *type, *id;
	int64_t schema;
	int rc = -1;

	memset(ev, 0, sizeof(*ev));
	root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		snprintf(err, errlen, "body is not JSON: %s at offset %d", jerr.text, jerr.position);
		return -1;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "body is not a JSON object");
		goto fail;
	}
	if ((type = get_string(root, "type", err, errlen)) == NULL)
		goto fail;
	if ((kind = event_kind_by_type(type)) == NULL) {
		snprintf(err, errlen, "unknown event type \"%.*s\"", (int)utf8_prefix(type, 60), type);
		goto fail;
	}
	ev->kind = kind->kind;
	ev->type = kind->type;
	if (subject != NULL && strcmp(subject, kind->subject) != 0) {
		snprintf(err, errlen, "%s event on subject \"%.*s\", expected \"%s\"", ev->type,
		    (int)utf8_prefix(subject, 100), subject,
		    kind->subject);
		goto fail;
	}
	if (get_int(root, "schema_version", &schema, err, errlen) != 0)
		goto fail;
	if (schema < EVENT_SCHEMA_VERSION_OLDEST || schema > EVENT_SCHEMA_VERSION) {
		snprintf(err, errlen, "unknown schema_version %lld (this consumer reads %d to %d)",
		    (long long)schema, EVENT_SCHEMA_VERSION_OLDEST, EVENT_SCHEMA_VERSION);
		goto fail;
	}
	ev->schema_version = (int)schema;
	/* Version 2 to 3 needs no step: the only change is that a deletion leaves its name and
	 * email out, and parse_payload() reads neither of a deletion, whatever its version. */
	if (schema == 1 && upcast_v1(root, err, errlen) != 0)
		goto fail;
	if ((id = get_string(root, "event_id", err, errlen)) == NULL)
		goto fail;
	if (!uuid_valid(id)) {
		snprintf(err, errlen, "event_id \"%.*s\" is not a uuid", (int)utf8_prefix(id, 60), id);
		goto fail;
	}
	snprintf(ev->event_id, sizeof(ev->event_id), "%s", id);
	for (char *c = ev->event_id; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	if (get_time(root, "occurred_at", ev->occurred_at, &ev->occurred_us, err, errlen) != 0)
		goto fail;
	if (json_object_get(root, "payload") == NULL) {
		snprintf(err, errlen, "missing field \"payload\"");
		goto fail;
	}
	if (parse_payload(json_object_get(root, "payload"), ev, err, errlen) != 0)
		goto fail;
	rc = 0;
fail:
	json_decref(root);
	if (rc != 0)
		event_release(ev);
	return rc;
}

void
event_release(struct event *ev)
{
	free(ev->name);
	free(ev->email);
	ev->name = ev->email = NULL;
}
