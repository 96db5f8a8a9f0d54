/* Bearer tokens with scopes for the HTTP APIs, loaded from the file API_TOKENS_FILE names.
 *
 * The file holds one token a line, `TOKEN SCOPE[,SCOPE...]`, where a scope is read, write or
 * metrics; `#` starts a comment (a token cannot hold one), blank lines are skipped. A line may
 * give `sha256:<64 hex digits>` instead of the token, so the file need not hold the secret
 * itself. Only SHA-256 digests are kept in memory: a presented token is hashed and compared with
 * every digest in constant time, so neither its length nor its first wrong byte shows in the time
 * an answer takes. Error messages name the file and the line, never a token. */
#ifndef COMMON_AUTH_H
#define COMMON_AUTH_H

#include <stdbool.h>
#include <stddef.h>

enum auth_scope {
	AUTH_SCOPE_READ = 1,
	AUTH_SCOPE_WRITE = 2,
	AUTH_SCOPE_METRICS = 4,
};

enum auth_result {
	AUTH_OK,	/* a valid token with the scope asked for */
	AUTH_MISSING,	/* no Authorization header, or not a Bearer one: 401 */
	AUTH_INVALID,	/* a Bearer token that is not in the file: 401 */
	AUTH_FORBIDDEN,	/* a valid token without the scope: 403 */
};

/* Shortest token a file may hold as itself: shorter ones can be guessed. */
#define AUTH_TOKEN_MIN 16

struct auth;

/* Reads the file at path. Returns NULL with err filled when it cannot be read or a line is not
 * valid (err names the line); the caller auth_free()s the result. */
struct auth *auth_new(const char *path, char *err, size_t errlen) __attribute__((warn_unused_result));
void auth_free(struct auth *a);

/* Reads the file again and, only when all of it is valid, replaces the tokens; on failure the
 * tokens in use stay and err says why. Safe while other threads call auth_check(). Fills *count
 * with the number of tokens now in use. */
int auth_reload(struct auth *a, size_t *count, char *err, size_t errlen) __attribute__((warn_unused_result));

/* How many tokens are in use. */
size_t auth_count(struct auth *a);

/* Checks the value of an Authorization header (NULL when there is none) for a token that has
 * scope need. *scopes (if not NULL) gets every scope of the token, 0 for none. */
enum auth_result auth_check(struct auth *a, const char *authorization, unsigned need, unsigned *scopes);

/* The same from the text of a file, name standing for its path in messages: for the unit tests. */
struct auth *auth_new_text(const char *text, const char *name, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The name of one scope, "read", "write" or "metrics". */
const char *auth_scope_name(unsigned scope);

#endif
