/* The snapshot command: one full-state user_snapshot event per existing user, written to the outbox. */
#ifndef RELAY_SNAPSHOT_H
#define RELAY_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pg.h"

#define SNAPSHOT_USAGE \
	"  snapshot [--after ID] [--batch N]\n" \
	"                                  write one user_snapshot event per user to the outbox,\n" \
	"                                  in batches; --after resumes after the last id printed\n"

struct snapshot_options {
	int64_t after;		/* start after this user id (0: from the first user) */
	long batch;		/* users per transaction */
	bool help;		/* --help: print the usage, write nothing */
};

/* Parses the command's arguments (argv[0] is the first one after "snapshot"): --after ID,
 * --batch N and --help. Returns 0, or -1 with err filled. */
int snapshot_parse_args(int argc, char **argv, struct snapshot_options *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Walks the users in id order, one transaction per batch, and prints progress and the last id done
 * to stderr so that a rerun with --after can continue. Returns 0 when every user was written (or
 * shutdown was requested between batches: then *last tells where to resume), -1 with err filled. */
int snapshot_run(const struct pg_settings *pg, const struct snapshot_options *o, int64_t *written,
    int64_t *last, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
