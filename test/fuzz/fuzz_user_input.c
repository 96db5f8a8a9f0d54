/* Fuzzes the body parser of POST and PUT /users (user-api/user_input.c): any bytes give either
 * fields that are safe to store or a 400/422 whose detail and field can go into a JSON answer.
 *
 * Properties:
 *   detail-utf8    the error's detail and field are valid UTF-8 (issue 14, item 3: jansson refuses
 *                  anything else and the answer became a 500)
 *   error-shape    an error is 400 or 422, with a non-empty detail
 *   accepted-text  an accepted name and email are valid UTF-8, trimmed, not empty, free of control
 *                  characters (C0, DEL, C1), within their lengths, and the email passes email_valid()
 *   both-paths     the parser reads every body as jansson alone does (user_input_parse_jansson()):
 *                  the same outcome, fields and error
 */
#include "fuzz.h"
#include "user_input.h"

static bool
trimmed(const char *s)
{
	size_t n = strlen(s);
	const char *ends = " \t\r\n";

	return n == 0 || (strchr(ends, s[0]) == NULL && strchr(ends, s[n - 1]) == NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct user_input in;
	struct input_error e;
	size_t nlen, elen;

	struct user_input in2;
	struct input_error e2;
	int rc, rc2;

	memset(&in, 0xA5, sizeof(in));
	memset(&e, 0xA5, sizeof(e));
	memset(&in2, 0xA5, sizeof(in2));
	memset(&e2, 0xA5, sizeof(e2));
	rc = user_input_parse((const char *)data, size, &in, &e);
	rc2 = user_input_parse_jansson((const char *)data, size, &in2, &e2);
	FUZZ_PROPERTY("both-paths", rc == rc2 && (rc == 0 ? memcmp(&in, &in2, sizeof(in)) == 0 :
	    memcmp(&e, &e2, sizeof(e)) == 0), "the plain-pair path and jansson read a body apart",
	    (const char *)data, size);
	if (rc != 0) {
		size_t dlen = strnlen(e.detail, sizeof(e.detail)), flen = strnlen(e.field, sizeof(e.field));

		FUZZ_PROPERTY("error-shape", dlen < sizeof(e.detail) && flen < sizeof(e.field),
		    "the detail or field is not NUL-terminated", e.detail, dlen);
		FUZZ_PROPERTY("error-shape", e.status == 400 || e.status == 422,
		    "an error that is neither 400 nor 422", e.detail, dlen);
		FUZZ_PROPERTY("error-shape", dlen > 0, "an empty detail", e.detail, dlen);
		FUZZ_PROPERTY("detail-utf8", fuzz_utf8_valid(e.detail, dlen), "the detail is not valid UTF-8",
		    e.detail, dlen);
		FUZZ_PROPERTY("detail-utf8", fuzz_utf8_valid(e.field, flen), "the field is not valid UTF-8",
		    e.field, flen);
		return 0;
	}
	nlen = strnlen(in.name, sizeof(in.name));
	elen = strnlen(in.email, sizeof(in.email));

	FUZZ_PROPERTY("accepted-text", nlen < sizeof(in.name) && elen < sizeof(in.email),
	    "an accepted name or email is not NUL-terminated", in.name, nlen);
	FUZZ_PROPERTY("accepted-text", nlen > 0 && elen > 0, "an accepted name or email is empty", in.name,
	    nlen);
	FUZZ_PROPERTY("accepted-text", fuzz_utf8_valid(in.name, nlen), "an accepted name is not valid UTF-8",
	    in.name, nlen);
	FUZZ_PROPERTY("accepted-text", fuzz_utf8_valid(in.email, elen),
	    "an accepted email is not valid UTF-8", in.email, elen);
	FUZZ_PROPERTY("accepted-text", !fuzz_has_control(in.name, nlen),
	    "an accepted name holds a control character", in.name, nlen);
	FUZZ_PROPERTY("accepted-text", !fuzz_has_control(in.email, elen),
	    "an accepted email holds a control character", in.email, elen);
	FUZZ_PROPERTY("accepted-text", trimmed(in.name) && trimmed(in.email),
	    "an accepted name or email is not trimmed", in.name, nlen);
	FUZZ_PROPERTY("accepted-text", utf8_codepoints(in.name) <= USER_NAME_MAX,
	    "an accepted name is longer than USER_NAME_MAX characters", in.name, nlen);
	FUZZ_PROPERTY("accepted-text", elen <= USER_EMAIL_MAX && email_valid(in.email),
	    "an accepted email is not a valid address", in.email, elen);
	return 0;
}
