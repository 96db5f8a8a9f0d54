/* The event contract in one place: event types, their subjects, the streams and the schema version.
 *
 * docs/events.md describes each event with an example. The body is built in SQL (the payload by
 * user_event_payload() in migrations/, the envelope by the relay's claim in outbox-relay/batch.c),
 * with the type, subject and schema version passed in from here; notification-consumer/event.c
 * parses it. A change to the payload's shape raises EVENT_SCHEMA_VERSION, and the consumer keeps
 * reading the version before it through an upcaster, so producers and consumers can be deployed in
 * either order. */
#ifndef COMMON_EVENT_CONTRACT_H
#define COMMON_EVENT_CONTRACT_H

#include <stddef.h>

/* The stream every event goes to, the subjects it holds, and where poison events are kept. */
#define EVENT_STREAM		"USER_EVENTS"
#define EVENT_STREAM_SUBJECTS	"user.events.>"
#define EVENT_DLQ_STREAM	"USER_EVENTS_DLQ"

/* The schema version producers write (outbox.schema_version), and the oldest one consumers read.
 * 1: payload {id, name, email, version, updated_at}, plus "deleted": true on a deletion only.
 * 2: "deleted" always present, true or false: a reader never infers it from the type.
 * 3: a user_deleted carries no personal data: no name, no email (docs/events.md says why this is
 *    a version of its own). Version 1 stays readable: a stream without a MaxAge may hold it. */
#define EVENT_SCHEMA_VERSION		3
#define EVENT_SCHEMA_VERSION_OLDEST	1
#define EVENT_SCHEMA_VERSION_TEXT	"3"	/* the same, for SQL parameters */

/* The payload keys that are personal data, as a PostgreSQL text[] literal: a user_deleted's
 * payload is user_event_payload(...) minus these, in every statement that writes one. */
#define EVENT_PERSONAL_KEYS_SQL		"'{name,email}'::text[]"

#define EVENT_TYPE_CREATED	"user_created"
#define EVENT_TYPE_UPDATED	"user_updated"
#define EVENT_TYPE_DELETED	"user_deleted"
#define EVENT_TYPE_SNAPSHOT	"user_snapshot"

#define EVENT_SUBJECT_CREATED	"user.events.created"
#define EVENT_SUBJECT_UPDATED	"user.events.updated"
#define EVENT_SUBJECT_DELETED	"user.events.deleted"
#define EVENT_SUBJECT_SNAPSHOT	"user.events.snapshot"

enum event_kind { EVENT_CREATED, EVENT_UPDATED, EVENT_DELETED, EVENT_SNAPSHOT };

struct event_kind_info {
	enum event_kind kind;
	const char *type;
	const char *subject;
};

/* The kind whose type is type, or NULL for an unknown type. */
const struct event_kind_info *event_kind_by_type(const char *type);
/* The kind's type and subject (static text). */
const struct event_kind_info *event_kind_info(enum event_kind kind);

#endif
