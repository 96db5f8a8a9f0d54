/* The process-wide shutdown flag: set by SIGTERM or SIGINT, polled by every loop. */
#ifndef COMMON_SHUTDOWN_H
#define COMMON_SHUTDOWN_H

#include <stdbool.h>

/* Installs SIGTERM and SIGINT handlers that set the shutdown flag, and ignores SIGPIPE. */
void shutdown_signals_install(void);
bool shutdown_requested(void);
/* Sleeps up to ms milliseconds; returns early (true) when shutdown was requested. */
bool shutdown_sleep_ms(long ms);

#endif
