/* PostgreSQL connection settings shared by the processes, read with the demo's variable names. */
#ifndef COMMON_PG_H
#define COMMON_PG_H

#include <libpq-fe.h>
#include <stddef.h>

#include "config.h"

struct pg_settings {
	const char *host;
	long port;
	const char *user;
	const char *password;
	const char *db;
	long connect_timeout_ms;
	long statement_timeout_ms;
};

/* Entries to splice into a service's settings table. */
#define PG_SETTINGS_ENTRIES(s)                                                                     \
	{ "POSTGRES_HOST", CONFIG_STRING, &(s).host, "localhost", 0, 0, "PostgreSQL host" },         \
	{ "POSTGRES_PORT", CONFIG_INT, &(s).port, "5432", 1, 65535, "PostgreSQL port" },            \
	{ "POSTGRES_USER", CONFIG_STRING, &(s).user, "postgres", 0, 0, "PostgreSQL user" },          \
	{ "POSTGRES_PASSWORD", CONFIG_STRING, &(s).password, "postgres", 0, 0,                      \
	    "PostgreSQL password" },                                                                \
	{ "POSTGRES_DB", CONFIG_STRING, &(s).db, "users_db", 0, 0, "PostgreSQL database" },          \
	{ "POSTGRES_CONNECT_TIMEOUT", CONFIG_MS, &(s).connect_timeout_ms, "2s", 1000, 60000,          \
	    "time allowed to open a PostgreSQL connection" },                                       \
	{ "POSTGRES_STATEMENT_TIMEOUT", CONFIG_MS, &(s).statement_timeout_ms, "5s", 0, 3600000,     \
	    "longest a statement may run (0: no limit)" }

/* Opens a connection; NULL with err filled when it fails. The caller PQfinish()es the result.
 * appname is shown in pg_stat_activity. */
PGconn *pg_connect(const struct pg_settings *s, const char *appname, char *err, size_t errlen);

/* Copies PQerrorMessage/PQresultErrorMessage without the trailing newline. */
void pg_error_text(const PGconn *c, const PGresult *r, char *out, size_t outlen);

/* Runs a statement that returns no rows (BEGIN, COMMIT, SET ...). Returns 0, or -1 with err
 * naming the statement and PostgreSQL's reason. */
int pg_exec_ok(PGconn *c, const char *sql, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* True when the error means the connection (or server) is gone, not that the statement failed. */
int pg_connection_lost(const PGconn *c, const PGresult *r);

#endif
