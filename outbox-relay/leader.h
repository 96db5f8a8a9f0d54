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

/* Connects if needed and tries to take the lock once, without waiting. Returns 1 when this
 * process is (now) the leader, 0 when another session holds the lock, -1 with err filled when
 * PostgreSQL could not be asked (the session is dropped and reopened on the next call). */
int leader_try_acquire(struct leader *l, char *err, size_t errlen);

/* For the leader: checks that the session holding the lock is still alive. Returns false (and
 * forgets the leadership) when it is gone, with err filled. */
bool leader_alive(struct leader *l, char *err, size_t errlen);

/* Gives the lock up (by closing its session). */
void leader_release(struct leader *l);

#endif
