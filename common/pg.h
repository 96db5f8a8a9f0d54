/* PostgreSQL connection settings shared by the processes, read with the demo's variable names. */
#ifndef COMMON_PG_H
#define COMMON_PG_H

#include <libpq-fe.h>
#include <stddef.h>

#include "config.h"

/* The login roles of the schema (migrations/0008_roles.sql): each process's POSTGRES_USER default. */
#define PG_ROLE_OWNER "user_sync_owner"	/* owns the schema; migrate */
#define PG_ROLE_API "user_sync_api"	/* user-api */
#define PG_ROLE_RELAY "user_sync_relay"	/* outbox-relay */
#define PG_ROLE_AUDIT "user_sync_audit"	/* audit */

struct pg_settings {
	const char *host;
	long port;
	const char *user;
	const char *password;	/* "": libpq's own sources (PGPASSWORD, PGPASSFILE, ~/.pgpass) */
	const char *db;
	const char *sslmode;	/* one of libpq's sslmode values, checked by pg_settings_check() */
	const char *sslrootcert;	/* "": libpq's default */
	const char *sslcert;
	const char *sslkey;
	long connect_timeout_ms;
	long statement_timeout_ms;
};

/* Entries to splice into a service's settings table; role is the process's default POSTGRES_USER.
 * The service's validate callback calls pg_settings_check(), which the table cannot express. */
#define PG_SETTINGS_ENTRIES(s, role)                                                                \
	{ "POSTGRES_HOST", CONFIG_STRING, &(s).host, "localhost", 0, 0,                             \
	    "PostgreSQL host (or a unix socket folder)" },                                          \
	{ "POSTGRES_PORT", CONFIG_INT, &(s).port, "5432", 1, 65535, "PostgreSQL port" },            \
	{ "POSTGRES_USER", CONFIG_STRING, &(s).user, role, 0, 0,                                    \
	    "PostgreSQL role (this process's own, created by migrations/0008_roles.sql)" },         \
	{ "POSTGRES_PASSWORD", CONFIG_STRING, &(s).password, NULL, 0, 0,                            \
	    "PostgreSQL password (empty: libpq's own sources, PGPASSWORD or ~/.pgpass)" },          \
	{ "POSTGRES_DB", CONFIG_STRING, &(s).db, "users_db", 0, 0, "PostgreSQL database" },         \
	{ "POSTGRES_SSLMODE", CONFIG_STRING, &(s).sslmode, "prefer", 0, 0,                          \
	    "TLS to PostgreSQL: disable, allow, prefer, require, verify-ca or verify-full" },       \
	{ "POSTGRES_SSLROOTCERT", CONFIG_STRING, &(s).sslrootcert, NULL, 0, 0,                      \
	    "file of the CA certificates that verify-ca and verify-full check the server against "  \
	    "(empty: libpq's default, ~/.postgresql/root.crt)" },                                   \
	{ "POSTGRES_SSLCERT", CONFIG_STRING, &(s).sslcert, NULL, 0, 0,                              \
	    "file of the client certificate, for a server that asks for one "                      \
	    "(empty: libpq's default)" },                                                           \
	{ "POSTGRES_SSLKEY", CONFIG_STRING, &(s).sslkey, NULL, 0, 0,                                \
	    "file of the client certificate's private key (empty: libpq's default)" },              \
	{ "POSTGRES_CONNECT_TIMEOUT", CONFIG_MS, &(s).connect_timeout_ms, "2s", 1000, 60000,        \
	    "time allowed to open a PostgreSQL connection" },                                       \
	{ "POSTGRES_STATEMENT_TIMEOUT", CONFIG_MS, &(s).statement_timeout_ms, "5s", 0, 3600000,     \
	    "longest a statement may run (0: no limit)" }

/* Checks what the settings table cannot: POSTGRES_SSLMODE is one of libpq's values. Returns 0, or
 * -1 with err naming the setting and the values it takes. */
int pg_settings_check(const struct pg_settings *s, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Opens a connection; NULL with err filled when it fails (host, port, user and libpq's reason, never
 * the password). The caller PQfinish()es the result. appname is shown in pg_stat_activity. */
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
