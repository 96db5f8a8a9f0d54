/* Unit tests of audit's pure logic: each kind of drift and the event that repairs it, the merge of
 * two pages read in id order and where a page ends; and its command line, read before anything
 * starts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../auditor/compare.h"
#include "../../auditor/settings.h"
#include "unit.h"

static struct user_pair
pair(bool in_pg, int64_t pgv, bool in_copy, int64_t copyv, bool deleted)
{
	return (struct user_pair){ .id = 7, .in_pg = in_pg, .pg_version = pgv, .in_copy = in_copy,
		.copy_version = copyv, .copy_deleted = deleted, .copy_personal = !deleted };
}

static void
test_classify(void)
{
	struct user_pair p;

	p = pair(true, 3, true, 3, false);
	CHECK(drift_classify(&p) == DRIFT_NONE);
	p = pair(false, 0, true, 4, true);	/* deleted on both sides */
	CHECK(drift_classify(&p) == DRIFT_NONE);
	p = pair(true, 3, false, 0, false);
	CHECK(drift_classify(&p) == DRIFT_MISSING);
	CHECK(drift_repair_for(&p, DRIFT_MISSING) == REPAIR_SNAPSHOT);
	p = pair(true, 3, true, 2, false);
	CHECK(drift_classify(&p) == DRIFT_BEHIND);
	CHECK(drift_repair_for(&p, DRIFT_BEHIND) == REPAIR_SNAPSHOT);
	p = pair(true, 3, true, 4, false);
	CHECK(drift_classify(&p) == DRIFT_AHEAD);
	CHECK(drift_repair_for(&p, DRIFT_AHEAD) == REPAIR_IMPOSSIBLE);
	/* A tombstone newer than the row is ahead too, not merely deleted. */
	p = pair(true, 3, true, 4, true);
	CHECK(drift_classify(&p) == DRIFT_AHEAD);
	p = pair(false, 0, true, 4, false);
	CHECK(drift_classify(&p) == DRIFT_DELETED_IN_POSTGRES);
	CHECK(drift_repair_for(&p, DRIFT_DELETED_IN_POSTGRES) == REPAIR_DELETE);
	/* A tombstone below the row's version: a snapshot rebases it; at the same version nothing can. */
	p = pair(true, 3, true, 2, true);
	CHECK(drift_classify(&p) == DRIFT_DELETED_IN_COPY);
	CHECK(drift_repair_for(&p, DRIFT_DELETED_IN_COPY) == REPAIR_SNAPSHOT);
	p = pair(true, 3, true, 3, true);
	CHECK(drift_classify(&p) == DRIFT_DELETED_IN_COPY);
	CHECK(drift_repair_for(&p, DRIFT_DELETED_IN_COPY) == REPAIR_IMPOSSIBLE);
	CHECK_STR(drift_kind_name(DRIFT_MISSING), "missing");
	CHECK_STR(drift_kind_name(DRIFT_DELETED_IN_POSTGRES), "deleted_in_postgres");
	CHECK_STR(drift_kind_name(DRIFT_DELETED_IN_COPY), "deleted_in_copy");
	/* A tombstone with a name or an email left: a deletion after it removes them. */
	p = pair(false, 0, true, 4, true);
	p.copy_personal = true;
	CHECK(drift_classify(&p) == DRIFT_PERSONAL_DATA);
	CHECK(drift_repair_for(&p, DRIFT_PERSONAL_DATA) == REPAIR_DELETE);
	CHECK_STR(drift_kind_name(DRIFT_PERSONAL_DATA), "personal_data");
	/* Alive in PostgreSQL, a live document holds them as it should. */
	p = pair(true, 3, true, 3, false);
	CHECK(p.copy_personal && drift_classify(&p) == DRIFT_NONE);
}

static void
test_merge(void)
{
	const struct pg_user pg[] = { { 1, 1 }, { 2, 5 }, { 4, 2 }, { 9, 1 } };
	const struct copy_doc copy[] = { { 2, 5, false, true }, { 3, 1, true, true },
		{ 4, 1, false, true }, { 8, 2, false, true } };
	struct user_pair out[8];
	size_t n;

	n = pair_merge(pg, 4, copy, 4, INT64_MAX, out);
	CHECK(n == 6);
	CHECK(out[0].id == 1 && out[0].in_pg && !out[0].in_copy);
	CHECK(out[1].id == 2 && out[1].in_pg && out[1].in_copy && out[1].copy_version == 5);
	CHECK(out[2].id == 3 && !out[2].in_pg && out[2].in_copy && out[2].copy_deleted &&
	    out[2].copy_personal);
	CHECK(out[3].id == 4 && out[3].pg_version == 2 && out[3].copy_version == 1);
	CHECK(out[4].id == 8 && !out[4].in_pg);
	CHECK(out[5].id == 9 && !out[5].in_copy);
	/* Only up to the page's end: what lies beyond is read again with the next page. */
	n = pair_merge(pg, 4, copy, 4, 4, out);
	CHECK(n == 4 && out[3].id == 4);
	n = pair_merge(pg, 0, copy, 0, INT64_MAX, out);
	CHECK(n == 0);
	n = pair_merge(pg, 4, copy, 0, 2, out);
	CHECK(n == 2 && !out[1].in_copy);
}

static void
test_page_end(void)
{
	/* A short page read everything up to its bound; a full one ends at its last id. */
	CHECK(page_end(3, 5, 40, INT64_MAX) == INT64_MAX);
	CHECK(page_end(5, 5, 40, INT64_MAX) == 40);
	CHECK(page_end(5, 5, 40, 30) == 30);
	CHECK(page_end(0, 5, 0, 77) == 77);
}

/* What the last load printed on stdout and stderr. */
static char printed[16384];

static int
load(struct audit_settings *s, int argc, char **argv)
{
	FILE *tmp = tmpfile();
	int out = dup(1), err = dup(2), rc;
	size_t n;

	fflush(stdout);
	fflush(stderr);
	dup2(fileno(tmp), 1);
	dup2(fileno(tmp), 2);
	memset(s, 0, sizeof(*s));
	rc = audit_settings_load(argc, argv, s);
	fflush(stdout);
	fflush(stderr);
	dup2(out, 1);
	dup2(err, 2);
	close(out);
	close(err);
	rewind(tmp);
	n = fread(printed, 1, sizeof(printed) - 1, tmp);
	printed[n] = '\0';
	fclose(tmp);
	return rc;
}

static void
test_args(void)
{
	struct audit_settings s;
	char *plain[] = { "audit", NULL };
	char *repair_every[] = { "audit", "--repair", "--every", "5m", NULL };
	char *every_eq[] = { "audit", "--every=30s", NULL };
	char *every_bad[] = { "audit", "--every", "5 minutes", NULL };
	char *every_short[] = { "audit", "--every", "10ms", NULL };
	char *every_missing[] = { "audit", "--every", NULL };
	char *unknown[] = { "audit", "--repiar", NULL };
	char *extra[] = { "audit", "now", NULL };
	char *help[] = { "audit", "--repair", "--help", NULL };

	unsetenv("MONGODB_URI");
	unsetenv("AUDIT_PAGE_SIZE");
	CHECK(load(&s, 1, plain) == -1);
	CHECK(!s.repair && s.every_ms == 0 && s.page_size == 1000 && s.recheck_ms == 2000);
	CHECK_STR(s.mongodb_db, "notifications_db");
	CHECK_STR(s.collection, "user_notifications");
	CHECK_STR(s.http.bind, "127.0.0.1");
	CHECK(load(&s, 4, repair_every) == -1 && s.repair && s.every_ms == 300000);
	CHECK(load(&s, 2, every_eq) == -1 && !s.repair && s.every_ms == 30000);
	CHECK(load(&s, 3, every_bad) == AUDIT_EXIT_USAGE && strstr(printed, "--every") != NULL);
	CHECK(load(&s, 3, every_short) == AUDIT_EXIT_USAGE);
	CHECK(load(&s, 2, every_missing) == AUDIT_EXIT_USAGE);
	CHECK(load(&s, 2, unknown) == AUDIT_EXIT_USAGE && strstr(printed, "--repiar") != NULL);
	CHECK(load(&s, 2, extra) == AUDIT_EXIT_USAGE && strstr(printed, "\"now\"") != NULL);
	/* --help anywhere answers, with the exit statuses. */
	CHECK(load(&s, 3, help) == 0 && strstr(printed, "Exit status") != NULL);
	setenv("AUDIT_PAGE_SIZE", "0", 1);
	CHECK(load(&s, 1, plain) == AUDIT_EXIT_USAGE && strstr(printed, "AUDIT_PAGE_SIZE") != NULL);
	unsetenv("AUDIT_PAGE_SIZE");
	/* A URI that does not parse is bad settings, and its password is not shown. */
	setenv("MONGODB_URI", "mongodb://alice:s3cret@", 1);
	CHECK(load(&s, 1, plain) == AUDIT_EXIT_USAGE && strstr(printed, "MONGODB_URI") != NULL);
	CHECK(strstr(printed, "s3cret") == NULL);
	unsetenv("MONGODB_URI");
}

int
main(void)
{
	test_classify();
	test_merge();
	test_page_end();
	test_args();
	return unit_report("audit");
}
