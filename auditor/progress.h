/* How far an audit pass has come: a line redrawn in place on a terminal, a log line every so often
 * otherwise. */
#ifndef AUDIT_PROGRESS_H
#define AUDIT_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct progress;

/* On a terminal (stderr) when tty, else a log line every every_ms; max_id is the highest user id
 * on either side, the 100 %. NULL when out of memory (then nothing is shown). The caller
 * progress_free()s the result. */
struct progress *progress_new(bool tty, long every_ms, int64_t max_id);
void progress_free(struct progress *p);

/* The pass has compared every user up to id at (INT64_MAX: all), compared of them, drift of them
 * differing so far. Shown when its time has come; p may be NULL. */
void progress_show(struct progress *p, int64_t at, uint64_t compared, uint64_t drift);
/* Erases the line on a terminal before other output goes there (the next show redraws it). */
void progress_clear(struct progress *p);

#endif
