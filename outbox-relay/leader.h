/* Leadership: one active relay per database, held as a PostgreSQL advisory lock on its own session. */
#ifndef RELAY_LEADER_H
#define RELAY_LEADER_H

#include <stdbool.h>
#include <stddef.h>

#include "pg.h"

struct leader;

/* Returns a new leader handle (not connected, not leading); the caller leader_free()s it. s and
 * appname must outlive it. */
struct leader *leader_new(const struct pg_settings *s, const char *appname, long key);
void leader_free(struct leader *l);

/* What one try for the lock found. */
enum leader_result {
	LEADER_UNKNOWN,		/* PostgreSQL could not be asked: err filled, the session dropped */
	LEADER_STANDBY,		/* another session holds the lock */
	LEADER_LEADING,		/* this process holds the lock (now, or still) */
};

/* Connects if needed and tries to take the lock once, without waiting. When this process leads
 * already, its session is checked instead, with a round trip; LEADER_UNKNOWN then means the lock
 * went with the session. After LEADER_UNKNOWN, the next call opens a new session. */
enum leader_result leader_try_acquire(struct leader *l, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Gives the lock up (by closing its session). */
void leader_release(struct leader *l);

#endif
