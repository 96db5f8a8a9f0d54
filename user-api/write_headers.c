/* Reading If-Match and checking Idempotency-Key, apart from the handlers so they can be fuzzed. */
#include "write_headers.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "httpd.h"

const char *
if_match_versions(const char *v, char *buf, size_t n)
{
	size_t used = 0;

	if (v == NULL)
		return NULL;
	while (*v == ' ')
		v++;
	if (strcmp(v, "*") == 0)
		return NULL;
	buf[used++] = '{';
	while (*v != '\0') {
		const char *end;
		char digits[24];
		int64_t version;
		size_t len;

		while (*v == ' ' || *v == ',')
			v++;
		if (*v == '\0')
			break;
		end = strchr(v, ',');
		len = end ? (size_t)(end - v) : strlen(v);
		while (len > 0 && v[len - 1] == ' ')
			len--;
		if (len >= 3 && len - 2 < sizeof(digits) && v[0] == '"' && v[len - 1] == '"') {
			snprintf(digits, sizeof(digits), "%.*s", (int)(len - 2), v + 1);
			if (http_parse_id(digits, &version) && used + 24 < n)
				used += (size_t)snprintf(buf + used, n - used, "%s%lld", used > 1 ? "," : "",
				    (long long)version);
		}
		v = end ? end + 1 : v + strlen(v);
	}
	buf[used++] = '}';
	buf[used] = '\0';
	return buf;
}

bool
idempotency_key_valid(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n > IDEMPOTENCY_KEY_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)k[i] < 0x20 || (unsigned char)k[i] > 0x7E)
			return false;
	return true;
}
