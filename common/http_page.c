/* Keyset pagination over ids, the one way every list of the project is read and linked. */
#include "http_page.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "utf8.h"

const char *
http_page_parse(struct http_page *p, const char *limit, const char *after)
{
	int64_t v;

	p->after = 0;
	p->limit = HTTP_PAGE_LIMIT_DEFAULT;
	if (limit != NULL) {
		if (!http_parse_id(limit, &v) || v > HTTP_PAGE_LIMIT_MAX)
			return "limit";
		p->limit = (long)v;
	}
	if (after != NULL && strcmp(after, "0") != 0 && !http_parse_id(after, &p->after))
		return "after";
	return NULL;
}

bool
http_page_read(struct http_page *p, struct http_request *req)
{
	const char *limit = http_query(req, "limit"), *after = http_query(req, "after");
	const char *bad = http_page_parse(p, limit, after);

	if (bad == NULL)
		return true;
	if (strcmp(bad, "limit") == 0)
		http_reply_problem(req, 400, "limit", "limit \"%.*s\" is not a whole number from 1 to %d",
		    (int)utf8_prefix(limit, 40), limit, HTTP_PAGE_LIMIT_MAX);
	else
		http_reply_problem(req, 400, "after", "after \"%.*s\" is not an id: expected 0 or a "
		    "positive whole number below 2^63", (int)utf8_prefix(after, 40), after);
	return false;
}

bool
http_page_has_next(const struct http_page *p, int64_t fetched)
{
	return fetched > p->limit;
}

void
http_page_link_next(const struct http_page *p, struct http_request *req, const char *path,
    int64_t last_id)
{
	char link[256];

	snprintf(link, sizeof(link), "<%s?after=%" PRId64 "&limit=%ld>; rel=\"next\"", path, last_id,
	    p->limit);
	http_add_header(req, "Link", link);
}
