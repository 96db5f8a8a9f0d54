/* Lists served a page at a time, alike on every port: ?limit= and ?after=<id> in, and a
 * `Link: <…>; rel="next"` header out only when a next page exists.
 *
 * A list handler reads the page, fetches one row more than it holds, and tells the helper how
 * many rows came back: that extra row is how it knows a next page exists without counting, so the
 * link never leads to an empty page. For example (the consumer's GET /notifications):
 *
 *	struct http_page page;
 *
 *	if (!http_page_read(&page, req))
 *		return;				(400 already answered)
 *	rows = fetch(page.after, page.limit + 1);
 *	if (http_page_has_next(&page, nrows)) {
 *		drop row page.limit;		(serve only the first page.limit)
 *		http_page_link_next(&page, req, "/notifications", id of row page.limit - 1);
 *	}
 */
#ifndef COMMON_HTTP_PAGE_H
#define COMMON_HTTP_PAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "httpd.h"

#define HTTP_PAGE_LIMIT_DEFAULT 100
#define HTTP_PAGE_LIMIT_MAX 1000

struct http_page {
	int64_t after;	/* rows whose id is greater than this; 0 for the first page */
	long limit;	/* rows in a full page, 1..HTTP_PAGE_LIMIT_MAX */
};

/* Reads ?limit= (a whole number from 1 to HTTP_PAGE_LIMIT_MAX; HTTP_PAGE_LIMIT_DEFAULT when
 * absent) and ?after= (0 or a positive id; 0 when absent) into *p. When either is malformed,
 * answers 400 problem+json whose field names it, and returns false: the handler returns at once. */
bool http_page_read(struct http_page *p, struct http_request *req) __attribute__((warn_unused_result));

/* The parsing of http_page_read() without a request: limit and after are the query values (NULL
 * when absent). Returns NULL with *p filled, or the parameter at fault, "limit" or "after"
 * (static text), with *p unspecified. */
const char *http_page_parse(struct http_page *p, const char *limit, const char *after);

/* Whether a next page exists, given fetched: how many rows a fetch of p->limit + 1 rows returned.
 * The caller serves only the first p->limit of them. */
bool http_page_has_next(const struct http_page *p, int64_t fetched);

/* Adds `Link: <path?after=<last_id>&limit=<limit>>; rel="next"` to the answer, last_id being the
 * id of the last row served. Call it only when http_page_has_next() said so. */
void http_page_link_next(const struct http_page *p, struct http_request *req, const char *path,
    int64_t last_id);

#endif
