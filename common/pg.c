/* Opens PostgreSQL connections with timeouts so a dead server is noticed within seconds. */
#include "pg.h"

#include <stdio.h>
#include <string.h>

PGconn *
pg_connect(const struct pg_settings *s, const char *appname, char *err, size_t errlen)
{
	char port[24], timeout[24], options[64];
	const char *keys[] = { "host", "port", "user", "password", "dbname", "connect_timeout",
		"application_name", "keepalives", "keepalives_idle", "keepalives_interval",
		"keepalives_count", "tcp_user_timeout", "options", NULL };
	const char *vals[14];
	PGconn *c;

	snprintf(port, sizeof(port), "%ld", s->port);
	/* libpq takes whole seconds and treats 1 as 2. */
	snprintf(timeout, sizeof(timeout), "%ld", (s->connect_timeout_ms + 999) / 1000);
	snprintf(options, sizeof(options), "-c statement_timeout=%ld", s->statement_timeout_ms);
	vals[0] = s->host;
	vals[1] = port;
	vals[2] = s->user;
	vals[3] = s->password;
	vals[4] = s->db;
	vals[5] = timeout;
	vals[6] = appname;
	vals[7] = "1";
	vals[8] = "5";
	vals[9] = "2";
	vals[10] = "3";
	vals[11] = "10000";
	vals[12] = options;
	vals[13] = NULL;
	c = PQconnectdbParams(keys, vals, 0);
	if (c == NULL) {
		snprintf(err, errlen, "could not connect to PostgreSQL: out of memory");
		return NULL;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		char msg[512];

		pg_error_text(c, NULL, msg, sizeof(msg));
		snprintf(err, errlen, "could not connect to PostgreSQL at %s:%ld: %s", s->host, s->port, msg);
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
