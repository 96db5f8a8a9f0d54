/* Shows an audit pass's progress: one line kept up to date on a terminal, periodic lines otherwise. */
#include "progress.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "log.h"

struct progress {
	bool tty;
	bool drawn;		/* a line is on the terminal */
	long every_ms;
	int64_t max_id;
	int64_t last_ms;
};

struct progress *
progress_new(bool tty, long every_ms, int64_t max_id)
{
	struct progress *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->tty = tty;
	p->every_ms = every_ms;
	p->max_id = max_id;
	/* The first page shows at once: a pass of a few pages shows where it is too. */
	p->last_ms = mono_ms() - (tty ? 100 : every_ms);
	return p;
}

void
progress_free(struct progress *p)
{
	progress_clear(p);
	free(p);
}

void
progress_show(struct progress *p, int64_t at, uint64_t compared, uint64_t drift)
{
	double pct = 100.0;

	if (p == NULL || mono_ms() - p->last_ms < (p->tty ? 100 : p->every_ms))
		return;
	p->last_ms = mono_ms();
	if (at < p->max_id && p->max_id > 0)
		pct = 100.0 * (double)at / (double)p->max_id;
	if (p->tty) {
		/* \033[K clears what a longer line before left. */
		fprintf(stderr, "\raudit: %3.0f%% user id %" PRId64 " of %" PRId64 ", %" PRIu64
		    " compared, %" PRIu64 " differ\033[K", pct, at < p->max_id ? at : p->max_id,
		    p->max_id, compared, drift);
		fflush(stderr);
		p->drawn = true;
	} else {
		log_info("audit: %.0f%%, user id %" PRId64 " of %" PRId64 ", %" PRIu64 " compared, %"
		    PRIu64 " differ", pct, at < p->max_id ? at : p->max_id, p->max_id, compared, drift);
	}
}

void
progress_clear(struct progress *p)
{
	if (p == NULL || !p->drawn)
		return;
	fputs("\r\033[K", stderr);
	fflush(stderr);
	p->drawn = false;
}
