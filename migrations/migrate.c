/* Applies migrations/NNNN_name.sql in order, each in its own transaction, under an advisory lock. */
#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "file.h"
#include "log.h"
#include "pg.h"

/* Any constant shared by every migrator of this schema; "user-sync" spelled in hex. */
#define MIGRATE_LOCK_KEY 0x7573657273796e63LL

struct migration {
	long version;
	char name[256];		/* file name */
	char *sql;
	size_t len;
};

static struct pg_settings pg;
static const char *migrations_dir;
static enum log_level level;
static enum log_format format;

static const struct config_entry settings[] = {
	PG_SETTINGS_ENTRIES(pg, PG_ROLE_OWNER),
	{ "MIGRATIONS_DIR", CONFIG_STRING, &migrations_dir, NULL, 0, 0,
	    "folder of NNNN_name.sql files (default: ../migrations beside the binary)" },
	LOG_SETTINGS_ENTRIES(level, format),
	{ NULL, 0, NULL, NULL, 0, 0, NULL },
};

static int
check(const void *arg, char *err, size_t errlen)
{
	return pg_settings_check(arg, err, errlen);
}

static int
migration_cmp(const void *a, const void *b)
{
	const struct migration *x = a, *y = b;

	return (x->version > y->version) - (x->version < y->version);
}

/* Loads every NNNN_name.sql of dir, sorted by version. */
static int
migrations_load(const char *dir, struct migration **out, size_t *count, char *err, size_t errlen)
{
	struct migration *list = NULL;
	size_t n = 0;
	struct dirent *de;
	DIR *d = opendir(dir);

	if (d == NULL) {
		snprintf(err, errlen, "could not open migrations folder \"%s\": %s", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		size_t nl = strlen(de->d_name);
		char path[PATH_MAX], *end;
		struct migration *m, *grown;
		long v;

		if (nl < 10 || strcmp(de->d_name + nl - 4, ".sql") != 0)
			continue;
		v = strtol(de->d_name, &end, 10);
		if (end != de->d_name + 4 || *end != '_' || v <= 0) {
			snprintf(err, errlen, "migration file \"%s\" is not named NNNN_name.sql", de->d_name);
			goto fail;
		}
		grown = realloc(list, (n + 1) * sizeof(*list));
		if (grown == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		list = grown;
		m = &list[n];
		memset(m, 0, sizeof(*m));
		m->version = v;
		snprintf(m->name, sizeof(m->name), "%s", de->d_name);
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		n++;
		/* A migration is a few KiB; 16 MiB says a wrong file was named. */
		if ((m->sql = file_read(NULL, path, 16 * 1024 * 1024, &m->len, err, errlen)) == NULL)
			goto fail;
	}
	closedir(d);
	d = NULL;
	qsort(list, n, sizeof(*list), migration_cmp);
	for (size_t i = 1; i < n; i++) {
		if (list[i].version == list[i - 1].version) {
			snprintf(err, errlen, "migrations \"%s\" and \"%s\" share version %ld", list[i - 1].name,
			    list[i].name, list[i].version);
			goto fail;
		}
	}
	*out = list;
	*count = n;
	return 0;
fail:
	if (d != NULL)
		closedir(d);
	for (size_t i = 0; i < n; i++)
		free(list[i].sql);
	free(list);
	return -1;
}

static int
exec_ok(PGconn *c, const char *sql, char *err, size_t errlen)
{
	PGresult *r = PQexec(c, sql);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

	if (!ok) {
		char msg[512];

		pg_error_text(c, r, msg, sizeof(msg));
		snprintf(err, errlen, "%s", msg);
	}
	PQclear(r);
	return ok ? 0 : -1;
}

/* Returns the checksum recorded for version, "" when not applied, via out; -1 on error. */
static int
applied_checksum(PGconn *c, long version, char *out, size_t outlen, char *applied_at, size_t atlen,
    char *err, size_t errlen)
{
	char v[24];
	const char *params[1] = { v };
	PGresult *r;

	snprintf(v, sizeof(v), "%ld", version);
	r = PQexecParams(c, "SELECT checksum, to_char(applied_at AT TIME ZONE 'UTC', "
	    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM schema_migrations WHERE version = $1",
	    1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		char msg[512];

		pg_error_text(c, r, msg, sizeof(msg));
		/* 42501: a database migrated before 0008_roles.sql belongs to the role that migrated
		 * it, usually the superuser, and its owner is the only one who can hand it over. */
		if (state != NULL && strcmp(state, "42501") == 0)
			snprintf(err, errlen, "could not read schema_migrations as \"%s\": %s; a database "
			    "migrated before the roles of 0008_roles.sql belongs to the role that migrated it: "
			    "run bin/migrate up once as a superuser, which hands it to " PG_ROLE_OWNER,
			    PQuser(c), msg);
		else
			snprintf(err, errlen, "could not read schema_migrations: %s", msg);
		PQclear(r);
		return -1;
	}
	out[0] = '\0';
	if (applied_at)
		applied_at[0] = '\0';
	if (PQntuples(r) == 1) {
		snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
		if (applied_at)
			snprintf(applied_at, atlen, "%s", PQgetvalue(r, 0, 1));
	}
	PQclear(r);
	return 0;
}

static int
file_checksum(PGconn *c, const struct migration *m, char *out, size_t outlen, char *err, size_t errlen)
{
	const char *params[1] = { m->sql };
	PGresult *r = PQexecParams(c, "SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')", 1, NULL,
	    params, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		char msg[512];

		pg_error_text(c, r, msg, sizeof(msg));
		snprintf(err, errlen, "could not checksum \"%s\": %s", m->name, msg);
		PQclear(r);
		return -1;
	}
	snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return 0;
}

static int
apply_one(PGconn *c, const struct migration *m, const char *sum, char *err, size_t errlen)
{
	char v[24], msg[512];
	const char *params[3] = { v, m->name, sum };
	PGresult *r;

	snprintf(v, sizeof(v), "%ld", m->version);
	if (exec_ok(c, "BEGIN", err, errlen) != 0)
		return -1;
	if (exec_ok(c, m->sql, msg, sizeof(msg)) != 0) {
		snprintf(err, errlen, "could not apply \"%s\": %s", m->name, msg);
		goto fail;
	}
	r = PQexecParams(c, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
	    3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		pg_error_text(c, r, msg, sizeof(msg));
		snprintf(err, errlen, "could not record \"%s\": %s", m->name, msg);
		PQclear(r);
		goto fail;
	}
	PQclear(r);
	if (exec_ok(c, "COMMIT", msg, sizeof(msg)) != 0) {
		snprintf(err, errlen, "could not commit \"%s\": %s", m->name, msg);
		goto fail;
	}
	return 0;
fail:
	(void)exec_ok(c, "ROLLBACK", msg, sizeof(msg));
	return -1;
}

/* up applies what is pending; status only reports. Either refuses changed files. */
static int
migrate_run(PGconn *c, struct migration *list, size_t n, int apply)
{
	char err[1024], lock[128];
	int rc = -1, applied = 0;

	snprintf(lock, sizeof(lock), "SELECT pg_advisory_lock(%lld)", MIGRATE_LOCK_KEY);
	if (exec_ok(c, lock, err, sizeof(err)) != 0) {
		log_error("could not take the migration lock: %s", err);
		return -1;
	}
	if (exec_ok(c, "SET client_min_messages = warning", err, sizeof(err)) != 0 ||
	    exec_ok(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
	    " version bigint PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
	    " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())", err, sizeof(err)) != 0) {
		log_error("could not create schema_migrations: %s", err);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char sum[80], stored[80], at[40];

		if (file_checksum(c, &list[i], sum, sizeof(sum), err, sizeof(err)) != 0 ||
		    applied_checksum(c, list[i].version, stored, sizeof(stored), at, sizeof(at), err,
		    sizeof(err)) != 0) {
			log_error("%s", err);
			goto out;
		}
		if (stored[0] != '\0') {
			if (strcmp(stored, sum) != 0) {
				log_error("migration \"%s\" was changed after it was applied: restore the file "
				    "and add a new migration instead", list[i].name);
				goto out;
			}
			if (!apply)
				printf("%04ld  %-40s applied %s\n", list[i].version, list[i].name, at);
			continue;
		}
		if (!apply) {
			printf("%04ld  %-40s pending\n", list[i].version, list[i].name);
			continue;
		}
		if (apply_one(c, &list[i], sum, err, sizeof(err)) != 0) {
			log_error("%s", err);
			goto out;
		}
		log_info("applied %s", list[i].name);
		applied++;
	}
	if (apply)
		log_info("schema is up to date (%d applied now, %zu in all)", applied, n);
	rc = 0;
out:
	(void)exec_ok(c, "SELECT pg_advisory_unlock_all()", err, sizeof(err));
	return rc;
}

static const char *
default_dir(void)
{
	static char dir[PATH_MAX];
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n <= 0)
		return "migrations";
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (slash)
		*slash = '\0';
	snprintf(dir, sizeof(dir), "%s/../migrations", exe);
	return dir;
}

int
main(int argc, char **argv)
{
	static const struct cli cli = {
		.prog = "migrate",
		.version = VERSION,
		.summary = "Applies the SQL migrations of the user service to PostgreSQL, in order, each in\n"
		    "its own transaction, under an advisory lock so that two migrators never interleave.\n"
		    "Refuses to run when an applied migration file was changed since.",
		.commands = "  up      apply every pending migration (default)\n"
		    "  status  list the migrations and whether each is applied",
		.settings = settings,
		.validate = check,
		.validate_arg = &pg,
	};
	struct migration *list = NULL;
	size_t n = 0;
	char err[1024];
	const char *cmd;
	PGconn *c;
	int argi, rc;

	if ((rc = cli_start(&cli, argc, argv, &argi)) >= 0)
		return rc;
	log_init("migrate", level, format);
	if (migrations_dir == NULL || *migrations_dir == '\0')
		migrations_dir = default_dir();
	cmd = argi < argc ? argv[argi] : "up";
	if (strcmp(cmd, "up") != 0 && strcmp(cmd, "status") != 0) {
		fprintf(stderr, "migrate: unknown command \"%s\"; expected up or status\n", cmd);
		return 2;
	}
	/* The commands take no arguments but --help. */
	if (argi + 1 < argc) {
		if (strcmp(argv[argi + 1], "--help") != 0 && strcmp(argv[argi + 1], "-h") != 0) {
			fprintf(stderr, "migrate: unknown %s argument \"%s\"; try migrate %s --help\n", cmd,
			    argv[argi + 1], cmd);
			return 2;
		}
		if (strcmp(cmd, "up") == 0)
			printf("Usage: migrate up\n\nApplies every pending migration, in order, each in its "
			    "own transaction.\nSettings come from the environment: see migrate --help.\n");
		else
			printf("Usage: migrate status\n\nLists the migrations and whether each is applied; "
			    "changes nothing.\nSettings come from the environment: see migrate --help.\n");
		return 0;
	}
	if (migrations_load(migrations_dir, &list, &n, err, sizeof(err)) != 0)
		fatal("%s", err);
	c = pg_connect(&pg, "migrate", err, sizeof(err));
	if (c == NULL)
		fatal("%s", err);
	rc = migrate_run(c, list, n, strcmp(cmd, "up") == 0);
	PQfinish(c);
	for (size_t i = 0; i < n; i++)
		free(list[i].sql);
	free(list);
	return rc == 0 ? 0 : 1;
}
