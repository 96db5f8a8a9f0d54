/* The process-wide shutdown flag, set by SIGTERM or SIGINT and polled by every loop, and the
 * reload flag, set by SIGHUP. */
#ifndef COMMON_SHUTDOWN_H
#define COMMON_SHUTDOWN_H

#include <stdbool.h>

/* Installs SIGTERM and SIGINT handlers that set the shutdown flag and a SIGHUP handler that sets
 * the reload flag, and ignores SIGPIPE. */
void shutdown_signals_install(void);
/* Whether SIGHUP came since the last call (which clears the flag). */
bool reload_requested(void);
bool shutdown_requested(void);
/* Sleeps up to ms milliseconds; returns early (true) when shutdown was requested. */
bool shutdown_sleep_ms(long ms);

#endif
