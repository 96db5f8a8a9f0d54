/* Fuzzes the small parsers of what a request carries besides its body: percent-decoding of the
 * path and query (common/percent.c), ids in paths (http_parse_id), ?limit= and ?after=
 * (http_page_parse), ?min_version= and ?wait= (config_parse_long, config_parse_ms, as
 * notification-consumer/api.c calls them), If-Match and Idempotency-Key (user-api/write_headers.c)
 * and traceparent (common/traceparent.c).
 *
 * Each input is one header or query value: every parser reads it as it came, and the query and
 * path parsers also read it percent-decoded, as libmicrohttpd hands it to them.
 *
 * Properties:
 *   percent-decode  decoding never grows the text, never yields a NUL (the length returned is the
 *                   string's), and agrees with a plain reference decoder
 *   id              http_parse_id() accepts exactly 1 to 19 digits whose value is 1..2^63-1, and the
 *                   id printed again is those digits without leading zeros
 *   page            limit is 1..1000 and after is 0 or an id; a refusal names limit or after
 *   min-version     an accepted min_version is at least 1 and prints as a number that reads back
 *   wait            an accepted wait is within its range and, for digits and a unit, is their value
 *   if-match        the literal is NULL for absent or "*", else "{}" or "{n,...}", fits its buffer,
 *                   and lists only ids that stood quoted in the header
 *   idempotency-key accepted exactly when 1 to 200 printable ASCII characters
 *   traceparent     accepted only in the W3C version 00 shape, lowercase hex with non-zero ids
 */
#include <inttypes.h>

#include "config.h"
#include "fuzz.h"
#include "http_page.h"
#include "httpd.h"
#include "percent.h"
#include "traceparent.h"
#include "write_headers.h"

#define WAIT_MAX_MS 30000L	/* CONSUMER_WAIT_MAX's default */

static int
hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)(c | 0x20);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The reference: %XX becomes its byte unless it is %00; everything else is copied. */
static size_t
reference_decode(const char *s, char *out)
{
	size_t o = 0;

	for (size_t i = 0; s[i] != '\0';) {
		if (s[i] == '%' && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0 &&
		    hex(s[i + 1]) * 16 + hex(s[i + 2]) != 0) {
			out[o++] = (char)(hex(s[i + 1]) * 16 + hex(s[i + 2]));
			i += 3;
		} else {
			out[o++] = s[i++];
		}
	}
	out[o] = '\0';
	return o;
}

static void
check_decode(const char *s, char *decoded)
{
	size_t len = strlen(s), n, rn;
	char *ref = malloc(len + 1);

	if (ref == NULL)
		return;
	memcpy(decoded, s, len + 1);
	n = percent_decode(decoded);
	FUZZ_PROPERTY_STR("percent-decode", n <= len, "decoding made the text longer", s);
	FUZZ_PROPERTY_STR("percent-decode", strlen(decoded) == n,
	    "the decoded text holds a NUL, or its length is not the one returned", s);
	rn = reference_decode(s, ref);
	FUZZ_PROPERTY_STR("percent-decode", rn == n && memcmp(ref, decoded, n) == 0,
	    "decoding differs from the reference decoder", s);
	free(ref);
}

/* The reference for ids: 1 to 19 digits, value 1..INT64_MAX. */
static bool
reference_id(const char *s, int64_t *out)
{
	unsigned __int128 v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 19)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v == 0 || v > INT64_MAX)
		return false;
	*out = (int64_t)v;
	return true;
}

static void
check_id(const char *s)
{
	int64_t id = -1, ref = -1;
	bool ok = http_parse_id(s, &id), want = reference_id(s, &ref);
	char printed[32];
	const char *digits = s;

	FUZZ_PROPERTY_STR("id", ok == want, ok ? "an id accepted that is not one" : "an id refused", s);
	if (!ok)
		return;
	FUZZ_PROPERTY_STR("id", id == ref, "an id read as another value", s);
	while (*digits == '0')
		digits++;
	snprintf(printed, sizeof(printed), "%" PRId64, id);
	FUZZ_PROPERTY_STR("id", strcmp(printed, digits) == 0, "an id does not print as its digits", s);
}

static void
check_page(const char *s)
{
	struct http_page p;
	const char *bad;
	int64_t id;

	bad = http_page_parse(&p, s, NULL);
	if (bad == NULL) {
		FUZZ_PROPERTY_STR("page", p.limit >= 1 && p.limit <= HTTP_PAGE_LIMIT_MAX && p.after == 0,
		    "a limit out of 1..1000 accepted", s);
		FUZZ_PROPERTY_STR("page", reference_id(s, &id) && id == p.limit, "a limit read as another value",
		    s);
	} else {
		FUZZ_PROPERTY_STR("page", strcmp(bad, "limit") == 0, "a bad limit blamed on another parameter",
		    s);
	}
	bad = http_page_parse(&p, NULL, s);
	if (bad == NULL) {
		FUZZ_PROPERTY_STR("page", p.limit == HTTP_PAGE_LIMIT_DEFAULT && p.after >= 0,
		    "after accepted as a negative id, or limit not defaulted", s);
		FUZZ_PROPERTY_STR("page", strcmp(s, "0") == 0 || (reference_id(s, &id) && id == p.after),
		    "after read as another value", s);
	} else {
		FUZZ_PROPERTY_STR("page", strcmp(bad, "after") == 0, "a bad after blamed on another parameter",
		    s);
	}
}

static void
check_min_version(const char *s)
{
	char printed[32];
	long v = -1, again = -1;

	if (config_parse_long(s, 1, INT64_MAX, &v) != 0)
		return;
	FUZZ_PROPERTY_STR("min-version", v >= 1, "a min_version below 1 accepted", s);
	snprintf(printed, sizeof(printed), "%ld", v);
	FUZZ_PROPERTY_STR("min-version", config_parse_long(printed, 1, INT64_MAX, &again) == 0 && again == v,
	    "a min_version does not read back from its digits", s);
}

static void
check_wait(const char *s)
{
	static const struct { const char *unit; long mult; } units[] = {
		{ "", 1 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	size_t digits = strspn(s, "0123456789");
	long v = -1;

	if (config_parse_ms(s, 0, WAIT_MAX_MS, &v) != 0)
		return;
	FUZZ_PROPERTY_STR("wait", v >= 0 && v <= WAIT_MAX_MS, "a wait out of its range accepted", s);
	if (digits == 0 || digits > 12)
		return;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(s + digits, units[i].unit) == 0) {
			FUZZ_PROPERTY_STR("wait", v == strtol(s, NULL, 10) * units[i].mult,
			    "a wait read as another duration", s);
			return;
		}
	}
	FUZZ_PROPERTY_STR("wait", false, "a wait with an unknown unit accepted", s);
}

/* Whether "digits" (the id as printed) stands in v as a quoted tag, leading zeros allowed. */
static bool
quoted_in(const char *v, const char *digits)
{
	for (const char *q = strchr(v, '"'); q != NULL; q = strchr(q + 1, '"')) {
		const char *p = q + 1;

		while (*p == '0')
			p++;
		if (strncmp(p, digits, strlen(digits)) == 0 && p[strlen(digits)] == '"')
			return true;
	}
	return false;
}

static void
check_if_match(const char *s)
{
	char buf[IF_MATCH_MAX];
	const char *lit = if_match_versions(s, buf, sizeof(buf));
	const char *v = s + strspn(s, " ");
	size_t len;

	if (strcmp(v, "*") == 0) {
		FUZZ_PROPERTY_STR("if-match", lit == NULL, "If-Match: * must accept any version", s);
		return;
	}
	FUZZ_PROPERTY_STR("if-match", lit == buf, "an If-Match without a literal", s);
	len = strnlen(buf, sizeof(buf));
	FUZZ_PROPERTY_STR("if-match", len >= 2 && len < sizeof(buf) && buf[0] == '{' && buf[len - 1] == '}',
	    "the literal is not a braced list that fits its buffer", s);
	for (const char *p = buf + 1; p < buf + len - 1;) {
		char digits[32];
		size_t n = strspn(p, "0123456789");
		int64_t id;

		FUZZ_PROPERTY_STR("if-match", n > 0 && n < sizeof(digits), "an element that is not a number", s);
		memcpy(digits, p, n);
		digits[n] = '\0';
		FUZZ_PROPERTY_STR("if-match", reference_id(digits, &id) && digits[0] != '0',
		    "an element that is not an id", s);
		FUZZ_PROPERTY_STR("if-match", quoted_in(s, digits), "a version that was not a quoted tag", s);
		p += n;
		FUZZ_PROPERTY_STR("if-match", *p == ',' || *p == '}', "elements not separated by commas", s);
		if (*p == ',')
			p++;
	}
	FUZZ_PROPERTY_STR("if-match", if_match_versions(NULL, buf, sizeof(buf)) == NULL,
	    "an absent If-Match must accept any version", s);
}

static void
check_idempotency_key(const char *s)
{
	size_t n = strlen(s);
	bool printable = true;

	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7E)
			printable = false;
	FUZZ_PROPERTY_STR("idempotency-key",
	    idempotency_key_valid(s) == (n >= 1 && n <= IDEMPOTENCY_KEY_MAX && printable),
	    "an Idempotency-Key judged against its rule", s);
}

static bool
lower_hex(const char *s, size_t n, bool nonzero)
{
	bool any = false;

	for (size_t i = 0; i < n; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
		any = any || s[i] != '0';
	}
	return any || !nonzero;
}

static void
check_traceparent(const char *s)
{
	bool want = strlen(s) == 55 && strncmp(s, "00-", 3) == 0 && lower_hex(s + 3, 32, true) &&
	    s[35] == '-' && lower_hex(s + 36, 16, true) && s[52] == '-';
	char fresh[56];

	/* The flags: two hex digits; the W3C text asks for lowercase, upper case is let through. */
	want = want && hex(s[53]) >= 0 && hex(s[54]) >= 0;
	FUZZ_PROPERTY_STR("traceparent", traceparent_valid(s) == want,
	    want ? "a well-formed traceparent refused" : "a malformed traceparent accepted", s);
	traceparent_new(fresh);
	FUZZ_PROPERTY_STR("traceparent", traceparent_valid(fresh), "a new traceparent is not valid", fresh);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size), *decoded = malloc(size + 1);

	if (s == NULL || decoded == NULL)
		goto out;
	check_decode(s, decoded);
	/* Headers arrive as they were sent; paths and query values decoded. */
	check_if_match(s);
	check_idempotency_key(s);
	check_traceparent(s);
	check_id(s);
	check_id(decoded);
	check_page(decoded);
	check_min_version(decoded);
	check_wait(decoded);
out:
	free(s);
	free(decoded);
	return 0;
}
