/* Reads users by keyset pages and by ids, each read a statement of its own that locks no row. */
#include "users.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct users_db {
	PGconn *conn;
	const struct pg_settings *pg;
};

struct users_db *
users_db_open(const struct pg_settings *pg, char *err, size_t errlen)
{
	struct users_db *db = calloc(1, sizeof(*db));

	if (db == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	db->pg = pg;
	if ((db->conn = pg_connect(pg, "audit", err, errlen)) == NULL) {
		free(db);
		return NULL;
	}
	return db;
}

void
users_db_close(struct users_db *db)
{
	if (db == NULL)
		return;
	PQfinish(db->conn);
	free(db);
}

PGconn *
users_db_conn(struct users_db *db)
{
	return db->conn;
}

char *
pg_id_array(const int64_t *ids, size_t n)
{
	char *s = malloc(n * 21 + 3), *p;

	if (s == NULL)
		return NULL;
	p = s;
	*p++ = '{';
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "%s%" PRId64, i ? "," : "", ids[i]);
	*p++ = '}';
	*p = '\0';
	return s;
}

/* Runs sql and reads (id, version) rows into out, at most max of them. */
static int
read_rows(struct users_db *db, const char *sql, int nparams, const char *const *params,
    struct pg_user *out, size_t max, size_t *n, char *err, size_t errlen)
{
	PGresult *r = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
	char msg[256];
	int rows;

	*n = 0;
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		pg_error_text(db->conn, r, msg, sizeof(msg));
		snprintf(err, errlen, "could not read users from PostgreSQL at %s:%ld/%s: %s",
		    db->pg->host, db->pg->port, db->pg->db, msg);
		PQclear(r);
		return -1;
	}
	rows = PQntuples(r);
	for (int i = 0; i < rows && (size_t)i < max; i++) {
		out[i].id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
		out[i].version = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		(*n)++;
	}
	PQclear(r);
	return 0;
}

int
users_db_page(struct users_db *db, int64_t after, int64_t upto, size_t limit,
    struct pg_user *out, size_t *n, char *err, size_t errlen)
{
	char a[24], u[24], l[24];
	const char *params[3] = { a, u, l };

	snprintf(a, sizeof(a), "%" PRId64, after);
	snprintf(u, sizeof(u), "%" PRId64, upto);
	snprintf(l, sizeof(l), "%zu", limit);
	return read_rows(db, "SELECT id, version FROM users WHERE id > $1::bigint AND id <= $2::bigint "
	    "ORDER BY id LIMIT $3::bigint", 3, params, out, limit, n, err, errlen);
}

int
users_db_get(struct users_db *db, const int64_t *ids, size_t n, struct pg_user *out,
    size_t *nout, char *err, size_t errlen)
{
	char *arr = pg_id_array(ids, n);
	const char *params[1] = { arr };
	int rc;

	if (arr == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	rc = read_rows(db, "SELECT id, version FROM users WHERE id = ANY ($1::bigint[]) ORDER BY id",
	    1, params, out, n, nout, err, errlen);
	free(arr);
	return rc;
}

int
users_db_max_id(struct users_db *db, int64_t *max, char *err, size_t errlen)
{
	struct pg_user row;
	size_t n;

	*max = 0;
	if (read_rows(db, "SELECT coalesce(max(id), 0), 0 FROM users", 0, NULL, &row, 1, &n, err,
	    errlen) != 0)
		return -1;
	if (n == 1)
		*max = row.id;
	return 0;
}
