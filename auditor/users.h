/* PostgreSQL's side of the audit: the users table read in pages of (id, version), one connection. */
#ifndef AUDIT_USERS_H
#define AUDIT_USERS_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "compare.h"
#include "pg.h"

struct users_db;

/* Connects; NULL with err filled when PostgreSQL cannot be reached. The caller users_db_close()s
 * the result. Every read is a statement of its own, outside any transaction: it sees one snapshot
 * and holds no lock on a row. */
struct users_db *users_db_open(const struct pg_settings *pg, char *err, size_t errlen);
void users_db_close(struct users_db *db);
/* The connection, for the repair's transactions (repair.h). Owned by db. */
PGconn *users_db_conn(struct users_db *db);

/* Up to limit users with after < id <= upto, in id order, into out; *n says how many. Returns 0,
 * or -1 with err filled. */
int users_db_page(struct users_db *db, int64_t after, int64_t upto, size_t limit,
    struct pg_user *out, size_t *n, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Those of the n users in ids (ascending) that exist, in id order, into out (room for n). */
int users_db_get(struct users_db *db, const int64_t *ids, size_t n, struct pg_user *out,
    size_t *nout, char *err, size_t errlen) __attribute__((warn_unused_result));
/* The highest user id (0 without users), for the progress shown. */
int users_db_max_id(struct users_db *db, int64_t *max, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ids as the text of a PostgreSQL array ("{1,2,3}"): a malloc()ed string the caller frees, or
 * NULL when out of memory. */
char *pg_id_array(const int64_t *ids, size_t n);

#endif
