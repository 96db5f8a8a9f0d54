/* Strict input for users: jansson parses with duplicate keys rejected; everything else (types,
 * unknown keys, NUL, invalid UTF-8, lengths, characters that break, reorder or hide text (one rule,
 * in common/utf8.h), email syntax) is checked here so that each failure names its field.
 *
 * The common body, an object of exactly "name" and "email" with plain strings, is read without
 * jansson (plain_pair()): a dozen allocations less per request. Whatever else a body holds goes
 * to jansson, so both paths read every body alike; test_user_input.c and the fuzz target
 * compare them. */
#include "user_input.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define REPLACEMENT "\xEF\xBF\xBD"

/* Fills *e: the status, the field at fault (NULL for none) and the detail. Returns -1, what the
 * parser returns for every invalid body. */
static int __attribute__((format(printf, 4, 5)))
input_fail(struct input_error *e, unsigned status, const char *field, const char *fmt, ...)
{
	char raw[512];
	va_list ap;

	e->status = status;
	utf8_quote(e->field, sizeof(e->field), field ? field : "", field ? strlen(field) : 0);
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	/* Quoted into a buffer half the size of raw, so a cut is at a character (utf8_quote()). */
	utf8_quote(e->detail, sizeof(e->detail), raw, strlen(raw));
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
		size_t n = s[k] < 0x80 ? 1 : utf8_seq(s + k, len - k);

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

/* The one rule for the characters a name or an email may not hold (common/utf8.h): control
 * characters, bidirectional formatting, invisible characters, a joiner outside a word, line
 * separators. Fills *e naming field and the first such character. */
static int
check_characters(const char *field, const char *s, struct input_error *e)
{
	struct utf8_found f;
	const char *c = s;

	while (*c >= 0x20 && *c < 0x7F)	/* printable ASCII: none of it is refused */
		c++;
	if (*c == '\0' || !utf8_find(s, strlen(s), UTF8_MASK_REFUSED, &f))
		return 0;
	return input_fail(e, 422, field, "\"%s\" must not contain %s (U+%04X at character %zu)", field,
	    utf8_class_name(f.cls), (unsigned)f.cp, f.index + 1);
}

/* jansson's message quotes the token it stopped in, cut after the byte it choked on. The body is
 * known to be UTF-8 here, so a byte of that quote that is not part of a valid sequence is a
 * character cut short: it is left out rather than shown as something the client did not send. */
static void
json_error_text(const char *text, char *out, size_t outsize)
{
	const unsigned char *u = (const unsigned char *)text;
	size_t len = strlen(text), o = 0;

	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq(u + i, len - i);

		if (n == 0) {
			i++;
			continue;
		}
		if (o + n >= outsize)
			break;
		memcpy(out + o, u + i, n);
		o += n;
		i += n;
	}
	out[o] = '\0';
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
			utf8_quote(field, fieldlen, key, strlen(key));
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

/* Trims and checks both values into *out; 0, or -1 with *e filled. */
static int
check_fields(const char *name, size_t name_len, const char *email, size_t email_len,
    struct user_input *out, struct input_error *e)
{
	if (!trim_copy(name, name_len, out->name, sizeof(out->name)) ||
	    utf8_codepoints(out->name) > USER_NAME_MAX)
		return input_fail(e, 422, "name", "\"name\" must be at most %d characters", USER_NAME_MAX);
	if (out->name[0] == '\0')
		return input_fail(e, 422, "name", "\"name\" must not be empty");
	if (check_characters("name", out->name, e) != 0)
		return -1;
	if (!trim_copy(email, email_len, out->email, sizeof(out->email)))
		return input_fail(e, 422, "email", "\"email\" must be at most %d characters",
		    USER_EMAIL_MAX);
	if (check_characters("email", out->email, e) != 0)
		return -1;
	if (!email_valid(out->email))
		return input_fail(e, 422, "email", "\"email\" is not a valid address");
	return 0;
}

struct span {
	const char *s;
	size_t len;
};

static const char *
skip_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* A JSON string at *p without escapes or control characters: its bytes in *out and *p past it;
 * false for anything else. */
static bool
plain_string(const char **p, const char *end, struct span *out)
{
	const char *c = *p;

	if (c >= end || *c != '"')
		return false;
	out->s = ++c;
	while (c < end && *c != '"') {
		if (*c == '\\' || (unsigned char)*c < 0x20)
			return false;
		c++;
	}
	if (c >= end)
		return false;
	out->len = (size_t)(c - out->s);
	*p = c + 1;
	return true;
}

/* True, with both values, when body is an object of "name" and "email", each once and nothing
 * else, whose values are plain strings (plain_string()); false for every other body, valid or
 * not, which jansson then reads. body is valid UTF-8. */
static bool
plain_pair(const char *body, size_t len, struct span *name, struct span *email)
{
	const char *p = body, *end = body + len;
	bool have_name = false, have_email = false;

	p = skip_space(p, end);
	if (p >= end || *p++ != '{')
		return false;
	for (;;) {
		struct span key, val;

		p = skip_space(p, end);
		if (!plain_string(&p, end, &key))
			return false;
		p = skip_space(p, end);
		if (p >= end || *p++ != ':')
			return false;
		p = skip_space(p, end);
		if (!plain_string(&p, end, &val))
			return false;
		if (!have_name && key.len == 4 && memcmp(key.s, "name", 4) == 0) {
			*name = val;
			have_name = true;
		} else if (!have_email && key.len == 5 && memcmp(key.s, "email", 5) == 0) {
			*email = val;
			have_email = true;
		} else {
			return false;
		}
		p = skip_space(p, end);
		if (p >= end)
			return false;
		if (*p == '}')
			break;
		if (*p++ != ',')
			return false;
	}
	return skip_space(p + 1, end) == end && have_name && have_email;
}

static int
parse(const char *body, size_t len, struct user_input *out, struct input_error *e, bool fast)
{
	json_error_t jerr;
	json_t *root = NULL;
	char field[sizeof(e->field)], text[JSON_ERROR_TEXT_LENGTH];
	const char *key, *name, *email;
	size_t name_len, email_len;
	json_t *v;
	char *repaired;
	size_t rlen = 0;
	int rc = -1;
	struct span pn = { 0 }, pe = { 0 };

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
	if (fast && plain_pair(body, len, &pn, &pe))
		return check_fields(pn.s, pn.len, pe.s, pe.len, out, e);
	root = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		if (strstr(jerr.text, "duplicate object key") != NULL) {
			/* jansson says: duplicate object key near '"name"'. */
			const char *q = strchr(jerr.text, '"');
			char dup[64] = "body";

			if (q != NULL) {
				size_t n = strcspn(q + 1, "\"");

				if (n > 0 && n < sizeof(dup))
					utf8_quote(dup, sizeof(dup), q + 1, n);
			}
			return input_fail(e, 422, dup, "duplicate key \"%s\"", dup);
		}
		json_error_text(jerr.text, text, sizeof(text));
		return input_fail(e, 400, NULL, "the body is not valid JSON: %s at position %d", text,
		    jerr.position);
	}
	if (!json_is_object(root)) {
		input_fail(e, 400, NULL, "the body must be a JSON object");
		goto out;
	}
	json_object_foreach(root, key, v) {
		if (strcmp(key, "name") != 0 && strcmp(key, "email") != 0) {
			utf8_quote(field, sizeof(field), key, strlen(key));
			input_fail(e, 422, field, "unknown field \"%s\"; expected name and email", field);
			goto out;
		}
	}
	if (check_string(root, "name", e, &name, &name_len) != 0 ||
	    check_string(root, "email", e, &email, &email_len) != 0)
		goto out;
	if (check_fields(name, name_len, email, email_len, out, e) != 0)
		goto out;
	rc = 0;
out:
	json_decref(root);
	return rc;
}

int
user_input_parse(const char *body, size_t len, struct user_input *out, struct input_error *e)
{
	return parse(body, len, out, e, true);
}

int
user_input_parse_jansson(const char *body, size_t len, struct user_input *out,
    struct input_error *e)
{
	return parse(body, len, out, e, false);
}
