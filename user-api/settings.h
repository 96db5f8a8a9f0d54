/* Settings of user-api, read from the environment through one table that also prints --help. */
#ifndef USER_API_SETTINGS_H
#define USER_API_SETTINGS_H

#include "httpd.h"
#include "log.h"
#include "natsconn.h"
#include "user_store.h"

struct user_api_settings {
	struct user_store_config store;	/* PostgreSQL, idempotency keys and their sweep */
	struct httpd_config http;
	struct nats_settings nats;	/* for the relay's wake-up nudges; url "" disables them */
	long drain_ms;			/* how long requests in flight may finish at shutdown */
	long key_sweep_interval_ms;	/* how often expired idempotency keys are removed */
	enum log_level log_level;
	enum log_format log_format;
};

/* The start of user-api's main(): --help, --version and --check, then every setting read from
 * the environment into *out (its strings point into the environment or the table's defaults, and
 * live as long as the process). Returns -1 when the process should go on, else the exit status
 * for main() to return: 0 after --help, --version or a valid --check, 2 for bad usage or an
 * invalid setting (the reason printed on stderr). */
int user_api_settings_load(int argc, char **argv, struct user_api_settings *out)
    __attribute__((warn_unused_result));

#endif
