/* Fuzzes the consumer's event parser (notification-consumer/event.c) with the RFC 3339 parser in
 * it: any message body gives either an event that is safe to apply or a reason it is poison that
 * is safe to log and to put into the dead-letter message's Dlq-Reason header.
 *
 * Each input is parsed as a body twice, without a subject and on user.events.created (the subject
 * check), and, when it is short, as an RFC 3339 time on its own.
 *
 * Properties:
 *   reason-utf8       a rejection reason is valid UTF-8 (issue 14, item 3)
 *   reason-control    a rejection reason holds no raw control byte (C0 or DEL): it is logged and
 *                     becomes a NATS header, where CR and LF would end it (issue 14, item 1)
 *   reason-shape      a rejection reason is not empty and fits its buffer
 *   accepted-event    an accepted event has a known type, positive id and version, a lowercase
 *                     uuid, valid RFC 3339 times, and a name and email (unless a deletion) that are
 *                     valid UTF-8 without control bytes
 *   rfc3339-roundtrip a time rfc3339_parse() accepts, formatted by rfc3339_us() and parsed again,
 *                     is the same instant; and a time already in rfc3339_us()'s form (UTC,
 *                     microseconds, no leap second) formats back to the same text, so no
 *                     impossible date (February 31) is accepted as another day
 */
#include <inttypes.h>

#include "event.h"
#include "fuzz.h"
#include "timefmt.h"

#define REASON_MAX 512		/* what the consumer passes (applier.c) */
/* 9999-12-31T23:59:59.999999Z: the last instant rfc3339_us() writes with a four-digit year. */
#define RFC3339_US_MAX INT64_C(253402300799999999)

static void
check_reason(const char *err)
{
	size_t len = strnlen(err, REASON_MAX);

	FUZZ_PROPERTY("reason-shape", len > 0 && len < REASON_MAX, "an empty or unterminated reason", err,
	    len);
	FUZZ_PROPERTY("reason-utf8", fuzz_utf8_valid(err, len), "the reason is not valid UTF-8", err, len);
	FUZZ_PROPERTY("reason-control", !fuzz_has_ascii_control(err, len),
	    "the reason holds a raw control byte", err, len);
}

static bool
lower_uuid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (size_t i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
			return false;
		}
	}
	return true;
}

static void
check_text(const char *what, const char *s)
{
	size_t len = s != NULL ? strlen(s) : 0;

	FUZZ_PROPERTY_STR("accepted-event", s != NULL, what, s);
	FUZZ_PROPERTY("accepted-event", fuzz_utf8_valid(s, len) && !fuzz_has_ascii_control(s, len), what,
	    s, len);
}

static void
check_event(const struct event *ev, const char *subject)
{
	const struct event_kind_info *kind = event_kind_info(ev->kind);
	int64_t us;

	FUZZ_PROPERTY_STR("accepted-event", kind != NULL && strcmp(kind->type, ev->type) == 0,
	    "the type does not match the kind", ev->type);
	FUZZ_PROPERTY_STR("accepted-event", subject == NULL || strcmp(subject, kind->subject) == 0,
	    "an event accepted on another type's subject", ev->type);
	FUZZ_PROPERTY_STR("accepted-event", ev->user_id > 0 && ev->version > 0,
	    "a payload id or version that is not positive", ev->type);
	FUZZ_PROPERTY_STR("accepted-event", ev->schema_version >= EVENT_SCHEMA_VERSION_OLDEST &&
	    ev->schema_version <= EVENT_SCHEMA_VERSION, "an unknown schema_version", ev->type);
	FUZZ_PROPERTY_STR("accepted-event", lower_uuid(ev->event_id), "an event_id that is not a lowercase uuid",
	    ev->event_id);
	FUZZ_PROPERTY_STR("accepted-event", rfc3339_parse(ev->occurred_at, &us) && us == ev->occurred_us,
	    "occurred_at does not parse to occurred_us", ev->occurred_at);
	FUZZ_PROPERTY_STR("accepted-event", rfc3339_parse(ev->updated_at, &us),
	    "updated_at is not an RFC 3339 time", ev->updated_at);
	FUZZ_PROPERTY_STR("accepted-event", ev->deleted == (ev->kind == EVENT_DELETED),
	    "deleted does not match the type", ev->type);
	if (ev->kind == EVENT_DELETED) {
		FUZZ_PROPERTY_STR("accepted-event", ev->name == NULL && ev->email == NULL,
		    "a deletion kept a name or email", ev->name != NULL ? ev->name : ev->email);
		return;
	}
	check_text("an accepted name is not valid UTF-8 or holds a control byte", ev->name);
	check_text("an accepted email is not valid UTF-8 or holds a control byte", ev->email);
}

/* Whether s has the shape rfc3339_us() writes: "YYYY-MM-DDTHH:MM:SS.uuuuuuZ". */
static bool
canonical_shape(const char *s)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";

	if (strlen(s) != sizeof(shape) - 1)
		return false;
	for (size_t i = 0; shape[i] != '\0'; i++)
		if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
			return false;
	return true;
}

static void
check_time(const char *s)
{
	char again[32];
	int64_t us, us2;

	if (!rfc3339_parse(s, &us) || us < 0 || us > RFC3339_US_MAX)
		return;
	rfc3339_us(us, again);
	FUZZ_PROPERTY_STR("rfc3339-roundtrip", rfc3339_parse(again, &us2) && us2 == us,
	    "a formatted time does not parse back to the same instant", s);
	/* Second 60 is a leap second, which RFC 3339 allows and time_t counts as the next minute. */
	if (canonical_shape(s) && !(s[17] == '6' && s[18] == '0'))
		FUZZ_PROPERTY_STR("rfc3339-roundtrip", strcmp(again, s) == 0,
		    "a time in canonical form is read as another instant (an impossible date?)", s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const subjects[] = { NULL, EVENT_SUBJECT_CREATED };
	char err[REASON_MAX];
	struct event ev;

	for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
		memset(err, 0, sizeof(err));
		if (event_parse((const char *)data, size, subjects[i], &ev, err, sizeof(err)) != 0) {
			check_reason(err);
			continue;
		}
		check_event(&ev, subjects[i]);
		event_release(&ev);
	}
	if (size < 64) {
		char *s = fuzz_cstr(data, size);

		if (s != NULL)
			check_time(s);
		free(s);
	}
	return 0;
}
