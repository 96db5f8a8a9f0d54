/* The table of event kinds declared in event_contract.h. */
#include "event_contract.h"

#include <string.h>

static const struct event_kind_info kinds[] = {
	{ EVENT_CREATED, EVENT_TYPE_CREATED, EVENT_SUBJECT_CREATED },
	{ EVENT_UPDATED, EVENT_TYPE_UPDATED, EVENT_SUBJECT_UPDATED },
	{ EVENT_DELETED, EVENT_TYPE_DELETED, EVENT_SUBJECT_DELETED },
	{ EVENT_SNAPSHOT, EVENT_TYPE_SNAPSHOT, EVENT_SUBJECT_SNAPSHOT },
};

const struct event_kind_info *
event_kind_by_type(const char *type)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(kinds[i].type, type) == 0)
			return &kinds[i];
	return NULL;
}

const struct event_kind_info *
event_kind_info(enum event_kind kind)
{
	return &kinds[kind];
}
