/* The copy's side of the audit: the consumer's collection in MongoDB (or FerretDB) read in pages of
 * (_id, version, deleted, and whether a name or an email is there). One client, used by one thread. */
#ifndef AUDIT_COPY_H
#define AUDIT_COPY_H

#include <stddef.h>
#include <stdint.h>

#include "compare.h"

struct copy;

/* Parses the URI (timeouts as the consumer sets them) and makes the client; does not connect.
 * NULL with err filled for a bad URI (shown without its password). The caller copy_close()s the
 * result; uri, db and collection must outlive it. */
struct copy *copy_open(const char *uri, const char *db, const char *collection, long timeout_ms,
    char *err, size_t errlen);
void copy_close(struct copy *c);

/* One round trip; -1 with err filled ("could not reach MongoDB at <uri without password>: ..."). */
int copy_ping(struct copy *c, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Reads up to limit documents with a numeric _id above after, in _id order: *read of them, the
 * last with _id *last (0 when none). Those whose _id is a whole number (every document the
 * consumer writes) go to out, *n of them; the others are not users' and are skipped. */
int copy_page(struct copy *c, int64_t after, size_t limit, struct copy_doc *out, size_t *n,
    size_t *read, int64_t *last, char *err, size_t errlen) __attribute__((warn_unused_result));
/* The documents of those of the n users in ids (ascending) that have one, in id order, into out
 * (room for n). */
int copy_get(struct copy *c, const int64_t *ids, size_t n, struct copy_doc *out, size_t *nout,
    char *err, size_t errlen) __attribute__((warn_unused_result));
/* The highest numeric _id (0 for an empty collection), for the progress shown. */
int copy_max_id(struct copy *c, int64_t *max, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
