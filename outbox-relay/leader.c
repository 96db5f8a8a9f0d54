/* The leader lock: pg_try_advisory_lock on a session of its own, so that it ends with the session. */
#include "leader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct leader {
	const struct pg_settings *pg;
	const char *appname;
	long key;
	PGconn *conn;
	bool leading;
};

struct leader *
leader_new(const struct pg_settings *s, const char *appname, long key)
{
	struct leader *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->pg = s;
	l->appname = appname;
	l->key = key;
	return l;
}

void
leader_free(struct leader *l)
{
	if (l == NULL)
		return;
	leader_release(l);
	free(l);
}

void
leader_release(struct leader *l)
{
	if (l->conn != NULL)
		PQfinish(l->conn);
	l->conn = NULL;
	l->leading = false;
}

/* Checks that the session holding the lock is still alive; false (the leadership forgotten, err
 * filled) when it is gone. */
static bool
leader_alive(struct leader *l, char *err, size_t errlen)
{
	char msg[256];
	PGresult *r;

	if (!l->leading || l->conn == NULL) {
		snprintf(err, errlen, "not the leader");
		return false;
	}
	/* A round trip, not just PQstatus: a session killed by the server (or a cut connection) is
	 * only noticed when the socket is used. */
	r = PQexec(l->conn, "SELECT 1");
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		pg_error_text(l->conn, r, msg, sizeof(msg));
		snprintf(err, errlen, "lost the session holding the leader lock: %s", msg);
		PQclear(r);
		leader_release(l);
		return false;
	}
	PQclear(r);
	return true;
}

enum leader_result
leader_try_acquire(struct leader *l, char *err, size_t errlen)
{
	const char *params[1];
	char key[24], msg[256];
	PGresult *r;

	if (l->leading)
		return leader_alive(l, err, errlen) ? LEADER_LEADING : LEADER_UNKNOWN;
	if (l->conn == NULL) {
		l->conn = pg_connect(l->pg, l->appname, err, errlen);
		if (l->conn == NULL)
			return LEADER_UNKNOWN;
	}
	snprintf(key, sizeof(key), "%ld", l->key);
	params[0] = key;
	r = PQexecParams(l->conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, NULL, params, NULL,
	    NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		pg_error_text(l->conn, r, msg, sizeof(msg));
		snprintf(err, errlen, "could not ask for the leader lock: %s", msg);
		PQclear(r);
		leader_release(l);
		return LEADER_UNKNOWN;
	}
	l->leading = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	return l->leading ? LEADER_LEADING : LEADER_STANDBY;
}
