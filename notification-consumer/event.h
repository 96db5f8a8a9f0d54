/* User events as the relay publishes them: parsing and validation of the JSON envelope. */
#ifndef CONSUMER_EVENT_H
#define CONSUMER_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event_contract.h"

struct event {
	enum event_kind kind;
	const char *type;		/* static text: "user_created", ... */
	int schema_version;		/* as sent; the event is upcast to EVENT_SCHEMA_VERSION */
	char event_id[37];
	char occurred_at[40];		/* as sent */
	int64_t occurred_us;		/* occurred_at in microseconds since the epoch */
	int64_t user_id;
	int64_t version;
	char *name;			/* owned; freed by event_release(); NULL for a deletion */
	char *email;			/* owned; NULL for a deletion */
	char updated_at[40];		/* as sent */
	bool deleted;
};

/* Parses and validates one event body received on subject, of any schema version from
 * EVENT_SCHEMA_VERSION_OLDEST to EVENT_SCHEMA_VERSION (older ones are upcast first). Returns 0, or -1 with err filled with
 * the reason the event is poison. On success the caller event_release()s ev. */
int event_parse(const char *data, size_t len, const char *subject, struct event *ev, char *err,
    size_t errlen) __attribute__((warn_unused_result));
void event_release(struct event *ev);

/* Parses RFC 3339 ("2026-11-29T10:00:00.123456Z", offsets allowed) into microseconds since the
 * epoch. Returns false for anything else. */
bool rfc3339_parse(const char *s, int64_t *us);

#endif
