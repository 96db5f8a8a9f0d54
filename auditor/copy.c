/* Reads the consumer's copy in _id order through one MongoDB client (the driver's, not thread-safe). */
#include "copy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "mongo_driver.h"

struct copy {
	mongoc_client_t *client;
	mongoc_collection_t *coll;
	const char *db, *collection;
	char where[512];	/* the URI without its password, for messages */
};

struct copy *
copy_open(const char *uri, const char *db, const char *collection, long timeout_ms, char *err,
    size_t errlen)
{
	struct copy *c = calloc(1, sizeof(*c));
	mongoc_uri_t *u;
	bson_error_t e;

	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->db = db;
	c->collection = collection;
	config_url_redact(uri, c->where, sizeof(c->where));
	if ((u = mongo_uri_parse(uri, timeout_ms, "audit", err, errlen)) == NULL) {
		free(c);
		return NULL;
	}
	c->client = mongoc_client_new_from_uri_with_error(u, &e);
	mongoc_uri_destroy(u);
	if (c->client == NULL) {
		snprintf(err, errlen, "could not make a MongoDB client for %s: %s", c->where, e.message);
		free(c);
		return NULL;
	}
	mongoc_client_set_error_api(c->client, MONGOC_ERROR_API_VERSION_2);
	c->coll = mongoc_client_get_collection(c->client, db, collection);
	return c;
}

void
copy_close(struct copy *c)
{
	if (c == NULL)
		return;
	mongoc_collection_destroy(c->coll);
	mongoc_client_destroy(c->client);
	free(c);
}

int
copy_ping(struct copy *c, char *err, size_t errlen)
{
	bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
	bson_error_t e;
	bool ok;

	ok = mongoc_client_command_simple(c->client, "admin", cmd, NULL, NULL, &e);
	bson_destroy(cmd);
	if (!ok) {
		snprintf(err, errlen, "could not reach MongoDB at %s: %s", c->where,
		    e.message[0] ? e.message : "unknown error");
		return -1;
	}
	return 0;
}

/* A document's _id as a user id: false when it is not a whole number. */
static bool
doc_id(const bson_t *doc, int64_t *id, bool *numeric)
{
	bson_iter_t it;

	*numeric = false;
	if (!bson_iter_init_find(&it, doc, "_id"))
		return false;
	switch (bson_iter_type(&it)) {
	case BSON_TYPE_INT32:
	case BSON_TYPE_INT64:
		*numeric = true;
		*id = bson_iter_as_int64(&it);
		return true;
	case BSON_TYPE_DOUBLE: {
		double d = bson_iter_double(&it);

		*numeric = true;
		*id = (int64_t)d;
		return d == floor(d);
	}
	default:
		return false;
	}
}

static void
doc_read(const bson_t *doc, int64_t id, struct copy_doc *out)
{
	bson_iter_t it;

	out->id = id;
	out->version = 0;
	out->deleted = false;
	out->personal = bson_iter_init_find(&it, doc, "name") || bson_iter_init_find(&it, doc, "email");
	if (bson_iter_init_find(&it, doc, "version") && BSON_ITER_HOLDS_NUMBER(&it))
		out->version = bson_iter_as_int64(&it);
	if (bson_iter_init_find(&it, doc, "deleted") && BSON_ITER_HOLDS_BOOL(&it))
		out->deleted = bson_iter_bool(&it);
}

/* Runs find and reads the documents into out (at most max); the raw count and last _id too. */
static int
find_docs(struct copy *c, const bson_t *filter, const bson_t *opts, struct copy_doc *out,
    size_t max, size_t *n, size_t *read, int64_t *last, char *err, size_t errlen)
{
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c->coll, filter, opts, NULL);
	const bson_t *doc;
	bson_error_t e;
	int rc = 0;

	*n = *read = 0;
	*last = 0;
	while (mongoc_cursor_next(cur, &doc)) {
		int64_t id = 0;
		bool numeric;

		if (doc_id(doc, &id, &numeric) && *n < max)
			doc_read(doc, id, &out[(*n)++]);
		if (numeric)
			*last = id;
		(*read)++;
	}
	if (mongoc_cursor_error(cur, &e)) {
		snprintf(err, errlen, "could not read %s.%s at %s: %s", c->db, c->collection, c->where,
		    e.message[0] ? e.message : "unknown error");
		rc = -1;
	}
	mongoc_cursor_destroy(cur);
	return rc;
}

int
copy_page(struct copy *c, int64_t after, size_t limit, struct copy_doc *out, size_t *n,
    size_t *read, int64_t *last, char *err, size_t errlen)
{
	bson_t *filter = BCON_NEW("_id", "{", "$gt", BCON_INT64(after), "}");
	bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}", "limit", BCON_INT64((int64_t)limit),
	    "projection", "{", "version", BCON_INT32(1), "deleted", BCON_INT32(1), "name", BCON_INT32(1),
	    "email", BCON_INT32(1), "}");
	int rc;

	rc = find_docs(c, filter, opts, out, limit, n, read, last, err, errlen);
	bson_destroy(filter);
	bson_destroy(opts);
	return rc;
}

static int
cmp_doc(const void *a, const void *b)
{
	const struct copy_doc *x = a, *y = b;

	return (x->id > y->id) - (x->id < y->id);
}

int
copy_get(struct copy *c, const int64_t *ids, size_t n, struct copy_doc *out, size_t *nout,
    char *err, size_t errlen)
{
	bson_t *filter = bson_new(), in, list;
	bson_t *opts = BCON_NEW("projection", "{", "version", BCON_INT32(1), "deleted", BCON_INT32(1),
	    "name", BCON_INT32(1), "email", BCON_INT32(1), "}");
	char key[24];
	size_t read;
	int64_t last;
	int rc;

	BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &in);
	BSON_APPEND_ARRAY_BEGIN(&in, "$in", &list);
	for (size_t i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "%zu", i);
		BSON_APPEND_INT64(&list, key, ids[i]);
	}
	bson_append_array_end(&in, &list);
	bson_append_document_end(filter, &in);
	rc = find_docs(c, filter, opts, out, n, nout, &read, &last, err, errlen);
	bson_destroy(filter);
	bson_destroy(opts);
	if (rc == 0)
		qsort(out, *nout, sizeof(*out), cmp_doc);
	return rc;
}

int
copy_max_id(struct copy *c, int64_t *max, char *err, size_t errlen)
{
	bson_t *filter = BCON_NEW("_id", "{", "$gt", BCON_INT64(0), "}");
	bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(-1), "}", "limit", BCON_INT64(1),
	    "projection", "{", "_id", BCON_INT32(1), "}");
	struct copy_doc doc;
	size_t n, read;
	int rc;

	rc = find_docs(c, filter, opts, &doc, 1, &n, &read, max, err, errlen);
	bson_destroy(filter);
	bson_destroy(opts);
	return rc;
}
