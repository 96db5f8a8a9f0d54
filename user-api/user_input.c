/* Strict input for users: jansson parses with duplicate keys rejected; everything else (types,
 * unknown keys, NUL, control characters, invalid UTF-8, lengths, email syntax) is checked here so
 * that each failure names its field. */
#include "user_input.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define REPLACEMENT "\xEF\xBF\xBD"

/* Copies at most len bytes of valid UTF-8 src into out (outsize bytes), cut back to a whole
 * character when it does not fit, so that a long key shown in an answer stays valid UTF-8. */
static void
copy_text(char *out, size_t outsize, const char *src, size_t len)
{
	if (len > outsize - 1) {
		len = outsize - 1;
		while (len > 0 && ((unsigned char)src[len] & 0xC0) == 0x80)
			len--;
	}
	memcpy(out, src, len);
	out[len] = '\0';
}

/* Fills *e: the status, the field at fault (NULL for none) and the detail. Returns -1, what the
 * parser returns for every invalid body. */
static int __attribute__((format(printf, 4, 5)))
input_fail(struct input_error *e, unsigned status, const char *field, const char *fmt, ...)
{
	va_list ap;

	e->status = status;
	copy_text(e->field, sizeof(e->field), field ? field : "", field ? strlen(field) : 0);
	va_start(ap, fmt);
	vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
	va_end(ap);
	return -1;
}

/* Copies body with every invalid UTF-8 byte replaced by U+FFFD; returns NULL when it was valid. */
static char *
utf8_repair(const char *body, size_t len, size_t *outlen)
{
	const unsigned char *s = (const unsigned char *)body;
	char *out = NULL;
	size_t o = 0, i = 0;
	bool bad = false;

	for (size_t k = 0; k < len;) {
		size_t n = utf8_seq(s + k, len - k);

		if (n == 0) {
			bad = true;
			break;
		}
		k += n;
	}
	if (!bad)
		return NULL;
	out = malloc(len * 3 + 1);
	if (out == NULL)
		return NULL;
	while (i < len) {
		size_t n = utf8_seq(s + i, len - i);

		if (n == 0) {
			memcpy(out + o, REPLACEMENT, 3);
			o += 3;
			i++;
		} else {
			memcpy(out + o, s + i, n);
			o += n;
			i += n;
		}
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

size_t
utf8_codepoints(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xC0) != 0x80)
			n++;
	return n;
}

/* Rejects C0 controls, DEL and C1 controls (U+0080..U+009F, encoded C2 80..C2 9F). */
static bool
has_control(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7F)
			return true;
		if (c == 0xC2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
		    (unsigned char)s[i + 1] <= 0x9F)
			return true;
	}
	return false;
}

static bool
is_trimmed(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Trims spaces, tabs and line breaks at both ends into out; false if it does not fit. */
static bool
trim_copy(const char *s, size_t len, char *out, size_t outsize)
{
	while (len > 0 && is_trimmed(*s)) {
		s++;
		len--;
	}
	while (len > 0 && is_trimmed(s[len - 1]))
		len--;
	if (len + 1 > outsize)
		return false;
	memcpy(out, s, len);
	out[len] = '\0';
	return true;
}

static bool
atext(char c)
{
	return isalnum((unsigned char)c) || strchr("!#$%&'*+/=?^_`{|}~-", c) != NULL;
}

bool
email_valid(const char *s)
{
	const char *at = strchr(s, '@'), *p, *label;
	size_t local;

	if (at == NULL || strchr(at + 1, '@') != NULL || strlen(s) > USER_EMAIL_MAX)
		return false;
	local = (size_t)(at - s);
	if (local == 0 || local > 64 || s[0] == '.' || at[-1] == '.')
		return false;
	for (p = s; p < at; p++) {
		if (*p == '.' && p[1] == '.')
			return false;
		if (*p != '.' && !atext(*p))
			return false;
	}
	/* The domain: labels of 1..63 letters, digits and inner hyphens; at least two of them. */
	label = at + 1;
	if (*label == '\0')
		return false;
	for (size_t labels = 0;; labels++) {
		size_t n = 0;

		while (isalnum((unsigned char)label[n]) || label[n] == '-')
			n++;
		if (n == 0 || n > 63 || label[0] == '-' || label[n - 1] == '-')
			return false;
		if (label[n] == '\0')
			return labels >= 1;
		if (label[n] != '.')
			return false;
		label += n + 1;
	}
}

/* Names the key whose key or string value holds U+FFFD, which utf8_repair() put there. */
static void
find_repaired_field(json_t *obj, char *field, size_t fieldlen)
{
	const char *key;
	json_t *v;

	snprintf(field, fieldlen, "body");
	if (!json_is_object(obj))
		return;
	json_object_foreach(obj, key, v) {
		if (strstr(key, REPLACEMENT) != NULL)
			return;		/* a key is not valid UTF-8: the body as a whole is at fault */
		if (json_is_string(v) && strstr(json_string_value(v), REPLACEMENT) != NULL) {
			copy_text(field, fieldlen, key, strlen(key));
			return;
		}
	}
}

static int
check_string(json_t *obj, const char *key, struct input_error *e, const char **val, size_t *len)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL)
		return input_fail(e, 422, key, "\"%s\" is required", key);
	if (!json_is_string(v))
		return input_fail(e, 422, key, "\"%s\" must be a string", key);
	*val = json_string_value(v);
	*len = json_string_length(v);
	if (memchr(*val, '\0', *len) != NULL)
		return input_fail(e, 422, key, "\"%s\" must not contain NUL characters", key);
	return 0;
}

int
user_input_parse(const char *body, size_t len, struct user_input *out, struct input_error *e)
{
	json_error_t jerr;
	json_t *root = NULL;
	char field[sizeof(e->field)];
	const char *key, *name, *email;
	size_t name_len, email_len;
	json_t *v;
	char *repaired;
	size_t rlen = 0;
	int rc = -1;

	if (len == 0)
		return input_fail(e, 400, NULL, "the body is empty; expected a JSON object");
	repaired = utf8_repair(body, len, &rlen);
	if (repaired != NULL) {
		root = json_loadb(repaired, rlen, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
		free(repaired);
		if (root == NULL)
			return input_fail(e, 400, NULL, "the body is not valid JSON (nor valid UTF-8)");
		find_repaired_field(root, field, sizeof(field));
		json_decref(root);
		return input_fail(e, 422, field, "\"%s\" must be valid UTF-8", field);
	}
	root = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		if (strstr(jerr.text, "duplicate object key") != NULL) {
			/* jansson says: duplicate object key near '"name"'. */
			const char *q = strchr(jerr.text, '"');
			char dup[64] = "body";

			if (q != NULL) {
				size_t n = strcspn(q + 1, "\"");

				if (n > 0 && n < sizeof(dup))
					copy_text(dup, sizeof(dup), q + 1, n);
			}
			return input_fail(e, 422, dup, "duplicate key \"%s\"", dup);
		}
		return input_fail(e, 400, NULL, "the body is not valid JSON: %s at position %d", jerr.text,
		    jerr.position);
	}
	if (!json_is_object(root)) {
		input_fail(e, 400, NULL, "the body must be a JSON object");
		goto out;
	}
	json_object_foreach(root, key, v) {
		if (strcmp(key, "name") != 0 && strcmp(key, "email") != 0) {
			copy_text(field, sizeof(field), key, strlen(key));
			input_fail(e, 422, field, "unknown field \"%s\"; expected name and email", field);
			goto out;
		}
	}
	if (check_string(root, "name", e, &name, &name_len) != 0 ||
	    check_string(root, "email", e, &email, &email_len) != 0)
		goto out;
	if (!trim_copy(name, name_len, out->name, sizeof(out->name)) ||
	    utf8_codepoints(out->name) > USER_NAME_MAX) {
		input_fail(e, 422, "name", "\"name\" must be at most %d characters", USER_NAME_MAX);
		goto out;
	}
	if (out->name[0] == '\0') {
		input_fail(e, 422, "name", "\"name\" must not be empty");
		goto out;
	}
	if (has_control(out->name, strlen(out->name))) {
		input_fail(e, 422, "name", "\"name\" must not contain control characters");
		goto out;
	}
	if (!trim_copy(email, email_len, out->email, sizeof(out->email))) {
		input_fail(e, 422, "email", "\"email\" must be at most %d characters", USER_EMAIL_MAX);
		goto out;
	}
	if (has_control(out->email, strlen(out->email))) {
		input_fail(e, 422, "email", "\"email\" must not contain control characters");
		goto out;
	}
	if (!email_valid(out->email)) {
		input_fail(e, 422, "email", "\"email\" is not a valid address");
		goto out;
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}
