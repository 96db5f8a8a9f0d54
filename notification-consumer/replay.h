/* `notification-consumer replay`: rebuilds the copy from the stream with an ephemeral consumer. */
#ifndef CONSUMER_REPLAY_H
#define CONSUMER_REPLAY_H

#include <nats/nats.h>
#include <stdbool.h>

#include "jetstream.h"
#include "store.h"

struct consumer_settings;

#define REPLAY_USAGE \
	"  replay [--from-seq N | --from-time RFC3339] [--fresh]\n" \
	"      rebuild the copy from the stream (from the first event by default); --fresh fills a\n" \
	"      new collection and merges it into the live one at the end; safe next to the running\n" \
	"      consumer\n"

struct replay_options {
	struct js_start start;	/* --from-seq or --from-time; zero: from the first event */
	bool fresh;		/* --fresh: fill a new collection and merge it in at the end */
};

/* Reads the replay command's arguments (argv[0] is "replay") into *o. Returns -1 when the command
 * should run, else the exit status for main() to return: 0 after --help (the usage printed on
 * stdout), 2 for bad arguments (the reason printed on stderr). It starts nothing, so main() calls
 * it before anything else. */
int replay_parse_args(int argc, char **argv, struct replay_options *o)
    __attribute__((warn_unused_result));

/* Runs the replay command as *o says; returns the process's exit status. Borrows nc, live and
 * cfg. */
int replay_run(natsConnection *nc, struct store *live, const struct consumer_settings *cfg,
    const struct replay_options *o);

#endif
