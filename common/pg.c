/* Opens PostgreSQL connections with timeouts so a dead server is noticed within seconds. */
#include "pg.h"

#include <stdio.h>
#include <string.h>

/* libpq's sslmode values, as its documentation lists them. */
static const char *const sslmodes[] = { "disable", "allow", "prefer", "require", "verify-ca",
	"verify-full" };

int
pg_settings_check(const struct pg_settings *s, char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof(sslmodes) / sizeof(sslmodes[0]); i++)
		if (strcmp(s->sslmode, sslmodes[i]) == 0)
			return 0;
	snprintf(err, errlen, "invalid POSTGRES_SSLMODE \"%s\": expected disable, allow, prefer, require, "
	    "verify-ca or verify-full", s->sslmode);
	return -1;
}

/* An empty setting is left to libpq (NULL): its environment variables and files, then its default. */
static const char *
or_libpq(const char *v)
{
	return v != NULL && *v != '\0' ? v : NULL;
}

PGconn *
pg_connect(const struct pg_settings *s, const char *appname, char *err, size_t errlen)
{
	char port[24], timeout[24], options[64];
	const char *keys[] = { "host", "port", "user", "dbname", "connect_timeout", "application_name",
		"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
		"tcp_user_timeout", "options", "sslmode", "sslrootcert", "sslcert", "sslkey", "password",
		NULL };
	const char *vals[18];
	PGconn *c;

	snprintf(port, sizeof(port), "%ld", s->port);
	/* libpq takes whole seconds and treats 1 as 2. */
	snprintf(timeout, sizeof(timeout), "%ld", (s->connect_timeout_ms + 999) / 1000);
	snprintf(options, sizeof(options), "-c statement_timeout=%ld", s->statement_timeout_ms);
	vals[0] = s->host;
	vals[1] = port;
	vals[2] = s->user;
	vals[3] = s->db;
	vals[4] = timeout;
	vals[5] = appname;
	vals[6] = "1";
	vals[7] = "5";
	vals[8] = "2";
	vals[9] = "3";
	vals[10] = "10000";
	vals[11] = options;
	vals[12] = s->sslmode;
	vals[13] = or_libpq(s->sslrootcert);
	vals[14] = or_libpq(s->sslcert);
	vals[15] = or_libpq(s->sslkey);
	/* NULL (no password given): libpq reads PGPASSWORD, then the password file (PGPASSFILE or
	 * ~/.pgpass); never a made-up default. */
	vals[16] = or_libpq(s->password);
	vals[17] = NULL;
	c = PQconnectdbParams(keys, vals, 0);
	if (c == NULL) {
		snprintf(err, errlen, "could not connect to PostgreSQL: out of memory");
		return NULL;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		char msg[512];

		/* libpq's messages name the host, the user and the reason, never the password. */
		pg_error_text(c, NULL, msg, sizeof(msg));
		snprintf(err, errlen, "could not connect to PostgreSQL at %s:%ld as \"%s\": %s", s->host,
		    s->port, s->user, msg);
		PQfinish(c);
		return NULL;
	}
	return c;
}

void
pg_error_text(const PGconn *c, const PGresult *r, char *out, size_t outlen)
{
	const char *m = r != NULL ? PQresultErrorMessage(r) : "";
	size_t n;

	if ((m == NULL || *m == '\0') && c != NULL)
		m = PQerrorMessage(c);
	snprintf(out, outlen, "%s", m && *m ? m : "unknown error");
	n = strlen(out);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
	/* Keep the first line: libpq's messages continue with DETAIL and hints. */
	out[strcspn(out, "\n")] = '\0';
}

int
pg_connection_lost(const PGconn *c, const PGresult *r)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

	if (c == NULL || PQstatus(c) != CONNECTION_OK)
		return 1;
	/* Class 08 is connection exceptions; 57P01..57P03 are admin shutdown and cannot connect. */
	if (state != NULL && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0))
		return 1;
	return r == NULL;
}

int
pg_exec_ok(PGconn *c, const char *sql, char *err, size_t errlen)
{
	PGresult *r = PQexec(c, sql);
	char msg[256];

	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		pg_error_text(c, r, msg, sizeof(msg));
		snprintf(err, errlen, "could not run \"%s\": %s", sql, msg);
		PQclear(r);
		return -1;
	}
	PQclear(r);
	return 0;
}
