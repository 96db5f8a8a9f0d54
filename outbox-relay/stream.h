/* The USER_EVENTS stream: its wanted configuration, creating or updating it, and reading its state. */
#ifndef RELAY_STREAM_H
#define RELAY_STREAM_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>

#include "event_contract.h"
#include "settings.h"

/* What stream_plan() found when comparing an existing stream with the wanted one. */
struct stream_plan {
	bool update;		/* some setting differs and can be changed in place */
	bool unsafe;		/* some setting differs and cannot (or should not) be changed */
	char changes[512];	/* "duplicate window 60s -> 120s, ..." of the safe differences */
	char problems[512];	/* the differences left alone, with the reason */
};

/* Fills *cfg with the wanted configuration. cfg points into static storage for its strings. */
void stream_config_wanted(const struct relay_settings *s, jsStreamConfig *cfg);

/* Compares an existing configuration with the wanted one. When plan->update is set, *merged is the
 * configuration to send: the existing one with the safe changes applied (other settings kept). */
void stream_plan(const jsStreamConfig *have, const jsStreamConfig *want, jsStreamConfig *merged,
    struct stream_plan *plan);

/* Creates the stream or brings it in line where that is safe. Returns 0 when the stream exists and
 * accepts our subjects; what was created, updated or left alone goes to note (empty when nothing
 * happened), *warn says whether the note is worth a warning (a difference left alone or an update
 * refused), and *created whether the stream was missing and has just been created. On failure
 * returns -1 with err filled. */
int stream_provision(jsCtx *js, const struct relay_settings *s, char *note, size_t notelen,
    bool *warn, bool *created, char *err, size_t errlen) __attribute__((warn_unused_result));

/* What a look at the stream found. */
struct stream_look {
	bool created_now;	/* it was missing and has just been created */
	int64_t created_ns;	/* its creation time, ns since the epoch */
	uint64_t first_seq;	/* its first sequence, at least 1 */
	uint64_t last_seq;	/* its last sequence (kept by a purge; 0 for a new stream) */
	int64_t max_age_ms;	/* 0: none */
	int64_t duplicates_ms;	/* its duplicate window */
	bool sealed;		/* it takes no more events */
};

/* Reads the stream's creation time, sequences and the settings the watch needs; a missing stream
 * is created first (as stream_provision(), with note and *warn). Returns 0, or -1 with err
 * filled. */
int stream_inspect(jsCtx *js, const struct relay_settings *s, struct stream_look *out, char *note,
    size_t notelen, bool *warn, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
