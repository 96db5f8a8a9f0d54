/* Bearer tokens with scopes: the file's parser, its reload, and the constant-time check. */
#include "auth.h"

#include <ctype.h>
#include <gnutls/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "util.h"

#define DIGEST_LEN 32
/* A tokens file is a short list; a bigger one is a mistake (a wrong file named). */
#define FILE_MAX (1024 * 1024)

struct tokens {
	size_t n;
	unsigned char (*digest)[DIGEST_LEN];
	unsigned *scopes;
};

struct auth {
	char *path;		/* NULL for auth_new_text() */
	pthread_rwlock_t lock;	/* guards cur */
	struct tokens *cur;
};

static const struct {
	const char *name;
	unsigned scope;
} scope_names[] = {
	{ "read", AUTH_SCOPE_READ },
	{ "write", AUTH_SCOPE_WRITE },
	{ "metrics", AUTH_SCOPE_METRICS },
};

const char *
auth_scope_name(unsigned scope)
{
	for (size_t i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++)
		if (scope_names[i].scope == scope)
			return scope_names[i].name;
	return "unknown";
}

static void
tokens_free(struct tokens *t)
{
	if (t == NULL)
		return;
	free(t->digest);
	free(t->scopes);
	free(t);
}

/* RFC 6750's b64token: what may stand after "Bearer ". */
static bool
token_char(char c)
{
	return isalnum((unsigned char)c) || strchr("-._~+/=", c) != NULL;
}

static int
sha256(const char *s, size_t len, unsigned char out[DIGEST_LEN])
{
	return gnutls_hash_fast(GNUTLS_DIG_SHA256, s, len, out) == 0 ? 0 : -1;
}

/* The scopes of "read,write": a bit mask, or 0 when a name is unknown (err says which). */
static unsigned
parse_scopes(char *list, char *err, size_t errlen)
{
	unsigned mask = 0;
	char *save = NULL;

	for (char *s = strtok_r(list, ",", &save); s != NULL; s = strtok_r(NULL, ",", &save)) {
		unsigned one = 0;

		for (size_t i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++)
			if (strcmp(s, scope_names[i].name) == 0)
				one = scope_names[i].scope;
		if (one == 0) {
			snprintf(err, errlen, "unknown scope \"%.32s\" (known: read, write, metrics)", s);
			return 0;
		}
		mask |= one;
	}
	if (mask == 0)
		snprintf(err, errlen, "no scope after the token (read, write or metrics)");
	return mask;
}

/* One line without its comment, split in place into token and scope list: 1 for a token, 0 for
 * a blank line, -1 with err filled. */
static int
parse_line(char *line, unsigned char digest[DIGEST_LEN], unsigned *scopes, char *err, size_t errlen)
{
	char *tok, *list, *extra, *save = NULL;
	char why[128];
	size_t n;

	line[strcspn(line, "#")] = '\0';
	if ((tok = strtok_r(line, " \t\r", &save)) == NULL)
		return 0;
	list = strtok_r(NULL, " \t\r", &save);
	extra = strtok_r(NULL, " \t\r", &save);
	if (list == NULL || extra != NULL) {
		snprintf(err, errlen, "expected \"TOKEN SCOPE[,SCOPE...]\"");
		return -1;
	}
	if ((*scopes = parse_scopes(list, why, sizeof(why))) == 0) {
		snprintf(err, errlen, "%s", why);
		return -1;
	}
	if (strncmp(tok, "sha256:", 7) == 0) {
		const char *hex = tok + 7;

		if (strlen(hex) != 2 * DIGEST_LEN) {
			snprintf(err, errlen, "a sha256: digest has 64 hex digits");
			return -1;
		}
		for (size_t i = 0; i < DIGEST_LEN; i++) {
			int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);

			if (hi < 0 || lo < 0) {
				snprintf(err, errlen, "a sha256: digest has 64 hex digits");
				return -1;
			}
			digest[i] = (unsigned char)(hi * 16 + lo);
		}
		return 1;
	}
	n = strlen(tok);
	for (size_t i = 0; i < n; i++)
		if (!token_char(tok[i])) {
			snprintf(err, errlen, "a token holds only letters, digits and -._~+/=");
			return -1;
		}
	if (n < AUTH_TOKEN_MIN) {
		snprintf(err, errlen, "a token is at least %d characters long", AUTH_TOKEN_MIN);
		return -1;
	}
	if (sha256(tok, n, digest) != 0) {
		snprintf(err, errlen, "could not hash the token");
		return -1;
	}
	return 1;
}

static struct tokens *
tokens_parse(const char *text, const char *name, char *err, size_t errlen)
{
	struct tokens *t = calloc(1, sizeof(*t));
	char *copy = strdup(text), *line, *next;
	size_t cap = 0, lineno = 0;

	if (t == NULL || copy == NULL) {
		snprintf(err, errlen, "%s: out of memory", name);
		goto fail;
	}
	for (line = copy; line != NULL; line = next) {
		unsigned char digest[DIGEST_LEN];
		unsigned scopes;
		char why[160];
		int rc;

		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		lineno++;
		if ((rc = parse_line(line, digest, &scopes, why, sizeof(why))) < 0) {
			snprintf(err, errlen, "%s, line %zu: %s", name, lineno, why);
			goto fail;
		}
		if (rc == 0)
			continue;
		if (t->n == cap) {
			size_t ncap = cap ? 2 * cap : 8;
			void *d = realloc(t->digest, ncap * sizeof(*t->digest));

			if (d != NULL)
				t->digest = d;
			void *s = d != NULL ? realloc(t->scopes, ncap * sizeof(*t->scopes)) : NULL;

			if (s == NULL) {
				snprintf(err, errlen, "%s: out of memory", name);
				goto fail;
			}
			t->scopes = s;
			cap = ncap;
		}
		memcpy(t->digest[t->n], digest, DIGEST_LEN);
		t->scopes[t->n++] = scopes;
	}
	if (t->n == 0) {
		snprintf(err, errlen, "%s holds no token: every request would be refused", name);
		goto fail;
	}
	free(copy);
	return t;
fail:
	free(copy);
	tokens_free(t);
	return NULL;
}

/* The text of the tokens file; NULL with err filled when it cannot be read or holds a NUL. */
static char *
read_tokens(const char *path, char *err, size_t errlen)
{
	size_t n;
	char *buf = file_read(NULL, path, FILE_MAX, &n, err, errlen);

	if (buf != NULL && memchr(buf, '\0', n) != NULL) {
		snprintf(err, errlen, "could not read \"%s\": it holds a NUL byte", path);
		free(buf);
		return NULL;
	}
	return buf;
}

static struct auth *
auth_with(struct tokens *t, const char *path)
{
	struct auth *a = calloc(1, sizeof(*a));

	if (a == NULL || (path != NULL && (a->path = strdup(path)) == NULL)) {
		free(a);
		return NULL;
	}
	pthread_rwlock_init(&a->lock, NULL);
	a->cur = t;
	return a;
}

struct auth *
auth_new_text(const char *text, const char *name, char *err, size_t errlen)
{
	struct tokens *t = tokens_parse(text, name, err, errlen);
	struct auth *a;

	if (t == NULL)
		return NULL;
	if ((a = auth_with(t, NULL)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", name);
		tokens_free(t);
	}
	return a;
}

struct auth *
auth_new(const char *path, char *err, size_t errlen)
{
	char *text = read_tokens(path, err, errlen);
	struct tokens *t;
	struct auth *a;

	if (text == NULL)
		return NULL;
	t = tokens_parse(text, path, err, errlen);
	free(text);
	if (t == NULL)
		return NULL;
	if ((a = auth_with(t, path)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		tokens_free(t);
	}
	return a;
}

int
auth_reload(struct auth *a, size_t *count, char *err, size_t errlen)
{
	char *text;
	struct tokens *t, *old;

	if (a->path == NULL) {
		snprintf(err, errlen, "the tokens were not read from a file");
		return -1;
	}
	if ((text = read_tokens(a->path, err, errlen)) == NULL)
		return -1;
	t = tokens_parse(text, a->path, err, errlen);
	free(text);
	if (t == NULL)
		return -1;
	pthread_rwlock_wrlock(&a->lock);
	old = a->cur;
	a->cur = t;
	pthread_rwlock_unlock(&a->lock);
	tokens_free(old);
	*count = t->n;
	return 0;
}

size_t
auth_count(struct auth *a)
{
	size_t n;

	pthread_rwlock_rdlock(&a->lock);
	n = a->cur->n;
	pthread_rwlock_unlock(&a->lock);
	return n;
}

void
auth_free(struct auth *a)
{
	if (a == NULL)
		return;
	tokens_free(a->cur);
	pthread_rwlock_destroy(&a->lock);
	free(a->path);
	free(a);
}

/* The token of "Bearer <token>" (the scheme in any case, spaces around), or NULL. */
static const char *
bearer_token(const char *h, size_t *len)
{
	if (h == NULL)
		return NULL;
	while (*h == ' ' || *h == '\t')
		h++;
	if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
		return NULL;
	h += 6;
	while (*h == ' ' || *h == '\t')
		h++;
	*len = strlen(h);
	while (*len > 0 && (h[*len - 1] == ' ' || h[*len - 1] == '\t'))
		(*len)--;
	return h;
}

enum auth_result
auth_check(struct auth *a, const char *authorization, unsigned need, unsigned *scopes)
{
	unsigned char digest[DIGEST_LEN];
	unsigned found = 0;
	size_t len = 0;
	const char *tok = bearer_token(authorization, &len);

	if (scopes != NULL)
		*scopes = 0;
	if (tok == NULL)
		return AUTH_MISSING;
	if (len == 0 || sha256(tok, len, digest) != 0)
		return AUTH_INVALID;
	pthread_rwlock_rdlock(&a->lock);
	/* Every digest is compared to the end, and a match is kept with a mask rather than a
	 * branch: the time taken depends only on the number of tokens. */
	for (size_t i = 0; i < a->cur->n; i++) {
		unsigned diff = 0;

		for (size_t j = 0; j < DIGEST_LEN; j++)
			diff |= (unsigned)(a->cur->digest[i][j] ^ digest[j]);
		/* diff is 0..255: (diff - 1) >> 8 is all ones when it is 0, else 0. */
		found |= a->cur->scopes[i] & (unsigned)(((diff - 1u) >> 8) & 0xffu);
	}
	pthread_rwlock_unlock(&a->lock);
	if (scopes != NULL)
		*scopes = found;
	if (found == 0)
		return AUTH_INVALID;
	return (found & need) == need ? AUTH_OK : AUTH_FORBIDDEN;
}
