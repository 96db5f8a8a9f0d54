/* `notification-consumer replay`: rebuilds the copy from the stream with an ephemeral consumer. */
#ifndef CONSUMER_REPLAY_H
#define CONSUMER_REPLAY_H

#include <nats/nats.h>
#include <stdbool.h>

#include "settings.h"
#include "store.h"

/* True when the replay command's arguments (argv[0] is "replay") ask for --help; then prints the
 * command's usage on stdout. Called before anything connects. */
bool replay_help(int argc, char **argv);

/* Runs the replay command with its own arguments (argv[0] is "replay"); returns the process's
 * exit status. Borrows nc and live. */
int replay_main(natsConnection *nc, struct store *live, const struct consumer_settings *cfg,
    int argc, char **argv);

#define REPLAY_USAGE \
	"  replay [--from-seq N | --from-time RFC3339] [--fresh]\n" \
	"      rebuild the copy from the stream (from the first event by default); --fresh fills new\n" \
	"      collections and swaps them in at the end; safe next to the running consumer\n"

#endif
