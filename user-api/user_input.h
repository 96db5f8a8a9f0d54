/* Parsing and validating the JSON body of POST and PUT /users: strict, with the offending field named. */
#ifndef USER_API_USER_INPUT_H
#define USER_API_USER_INPUT_H

#include <stdbool.h>
#include <stddef.h>

#define USER_NAME_MAX 200	/* code points, after trimming */
#define USER_EMAIL_MAX 254	/* bytes, after trimming (RFC 5321 path limit) */

struct user_input {
	char name[USER_NAME_MAX * 4 + 1];
	char email[USER_EMAIL_MAX + 1];
};

struct input_error {
	unsigned status;	/* 400 for a malformed body, 422 for invalid fields */
	char field[64];		/* the field at fault, "" when none */
	char detail[256];	/* valid UTF-8, whatever the body held */
};

/* Parses body (len bytes, need not be NUL-terminated) into *out with both fields trimmed and
 * checked. Returns 0, or -1 with *e filled. */
int user_input_parse(const char *body, size_t len, struct user_input *out, struct input_error *e)
    __attribute__((warn_unused_result));
/* The same, every body read by jansson: for the tests that show both paths read bodies alike. */
int user_input_parse_jansson(const char *body, size_t len, struct user_input *out,
    struct input_error *e) __attribute__((warn_unused_result));

/* True when s (NUL-terminated) is a plausible address: one @, a dot-atom local part of at most
 * 64 bytes, a domain of at least two labels of letters, digits and inner hyphens. */
bool email_valid(const char *s);

/* Length of valid UTF-8 s in code points. */
size_t utf8_codepoints(const char *s);

#endif
