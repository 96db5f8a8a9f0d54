/* Signal handling reduced to one atomic flag, so that no code runs inside a signal handler. */
#include "shutdown.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "clock.h"

static atomic_bool shutdown_flag;
static atomic_bool reload_flag;

static void
on_signal(int sig)
{
	if (sig == SIGHUP)
		atomic_store(&reload_flag, true);
	else
		atomic_store(&shutdown_flag, true);
}

void
shutdown_signals_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

bool
reload_requested(void)
{
	return atomic_exchange(&reload_flag, false);
}

bool
shutdown_requested(void)
{
	return atomic_load(&shutdown_flag);
}

bool
shutdown_sleep_ms(long ms)
{
	int64_t end = mono_ms() + ms;

	while (!shutdown_requested()) {
		int64_t left = end - mono_ms();
		struct timespec ts;

		if (left <= 0)
			return false;
		if (left > 50)
			left = 50;
		ts.tv_sec = 0;
		ts.tv_nsec = left * 1000000;
		nanosleep(&ts, NULL);
	}
	return true;
}
