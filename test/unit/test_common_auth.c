/* Unit tests of common/auth.c: the tokens file's lines, digests, scopes, and what a header earns. */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "unit.h"

/* sha256("reader-token-0123456789"), as `printf %s reader-token-0123456789 | sha256sum` prints it. */
#define READER_DIGEST "b3057e05d75e8cdca4bd6ddd527af736913e8464a7a3d47d7a09389eaa8e1eb4"

static struct auth *
load(const char *text, char *err, size_t errlen)
{
	return auth_new_text(text, "tokens", err, errlen);
}

static void
test_lines(void)
{
	char err[256] = "";
	struct auth *a;

	a = load("# the operators' tokens\n"
	    "\n"
	    "writer-token-0123456789 read,write   # the deploy job\n"
	    "  metrics-token-0123456789\tmetrics\n", err, sizeof(err));
	CHECK(a != NULL);
	if (a != NULL)
		CHECK(auth_count(a) == 2);
	auth_free(a);

	CHECK(load("", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "holds no token") != NULL);
	CHECK(load("# only a comment\n", err, sizeof(err)) == NULL);

	CHECK(load("writer-token-0123456789\n", err, sizeof(err)) == NULL);
	CHECK_STR(err, "tokens, line 1: expected \"TOKEN SCOPE[,SCOPE...]\"");
	CHECK(load("ok-token-0123456789 read\nwriter-token-0123456789 read write\n", err,
	    sizeof(err)) == NULL);
	CHECK_STR(err, "tokens, line 2: expected \"TOKEN SCOPE[,SCOPE...]\"");
	CHECK(load("writer-token-0123456789 read,admin\n", err, sizeof(err)) == NULL);
	CHECK_STR(err, "tokens, line 1: unknown scope \"admin\" (known: read, write, metrics)");
	CHECK(load("writer-token-0123456789 ,\n", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "no scope") != NULL);
	CHECK(load("short-token read\n", err, sizeof(err)) == NULL);
	CHECK_STR(err, "tokens, line 1: a token is at least 16 characters long");
	CHECK(load("bad\"token-0123456789 read\n", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "only letters") != NULL);
	/* A message names the line, never the token. */
	CHECK(strstr(err, "0123456789") == NULL);
	CHECK(load("sha256:abc read\n", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "64 hex digits") != NULL);
	CHECK(load("sha256:" READER_DIGEST "zz read\n", err, sizeof(err)) == NULL);
	CHECK(load("sha256:zz" READER_DIGEST " read\n", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "64 hex digits") != NULL);
}

static void
test_check(void)
{
	char err[256] = "";
	unsigned scopes = 99;
	/* The digest of the reader's token, in capitals: hex digits in either case. */
	struct auth *a = load("sha256:B3057E05D75E8CDCA4BD6DDD527AF736913E8464A7A3D47D7A09389EAA8E1EB4 read\n"
	    "writer-token-0123456789 read,write\n"
	    "metrics-token-0123456789 metrics\n", err, sizeof(err));

	CHECK(a != NULL);
	if (a == NULL) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	CHECK(auth_check(a, NULL, AUTH_SCOPE_READ, &scopes) == AUTH_MISSING);
	CHECK(scopes == 0);
	CHECK(auth_check(a, "Basic dXNlcjpwYXNz", AUTH_SCOPE_READ, NULL) == AUTH_MISSING);
	CHECK(auth_check(a, "Bearer", AUTH_SCOPE_READ, NULL) == AUTH_MISSING);
	CHECK(auth_check(a, "Bearer ", AUTH_SCOPE_READ, NULL) == AUTH_INVALID);
	CHECK(auth_check(a, "Bearer nobody-token-0123456789", AUTH_SCOPE_READ, NULL) == AUTH_INVALID);
	/* One byte more or less is another token. */
	CHECK(auth_check(a, "Bearer writer-token-012345678", AUTH_SCOPE_READ, NULL) == AUTH_INVALID);
	CHECK(auth_check(a, "Bearer writer-token-01234567890", AUTH_SCOPE_READ, NULL) == AUTH_INVALID);

	CHECK(auth_check(a, "Bearer writer-token-0123456789", AUTH_SCOPE_WRITE, &scopes) == AUTH_OK);
	CHECK(scopes == (AUTH_SCOPE_READ | AUTH_SCOPE_WRITE));
	CHECK(auth_check(a, "bearer   writer-token-0123456789  ", AUTH_SCOPE_READ, NULL) == AUTH_OK);
	CHECK(auth_check(a, "Bearer writer-token-0123456789", AUTH_SCOPE_METRICS, NULL) == AUTH_FORBIDDEN);
	CHECK(auth_check(a, "Bearer metrics-token-0123456789", AUTH_SCOPE_METRICS, NULL) == AUTH_OK);
	CHECK(auth_check(a, "Bearer metrics-token-0123456789", AUTH_SCOPE_READ, NULL) == AUTH_FORBIDDEN);
	/* A token given by its digest. */
	CHECK(auth_check(a, "Bearer reader-token-0123456789", AUTH_SCOPE_READ, &scopes) == AUTH_OK);
	CHECK(scopes == AUTH_SCOPE_READ);
	CHECK(auth_check(a, "Bearer reader-token-0123456789", AUTH_SCOPE_WRITE, NULL) == AUTH_FORBIDDEN);
	/* No scope asked (/readyz): any caller passes, and the scopes tell what a token may see. */
	CHECK(auth_check(a, "Bearer metrics-token-0123456789", 0, &scopes) == AUTH_OK);
	CHECK(scopes == AUTH_SCOPE_METRICS);
	auth_free(a);
}

static void
test_names(void)
{
	CHECK_STR(auth_scope_name(AUTH_SCOPE_READ), "read");
	CHECK_STR(auth_scope_name(AUTH_SCOPE_WRITE), "write");
	CHECK_STR(auth_scope_name(AUTH_SCOPE_METRICS), "metrics");
}

int
main(void)
{
	test_lines();
	test_check();
	test_names();
	return unit_report("common_auth");
}
