/* Reads that wait for a version of a user's copy (GET /notifications/user/{id}?min_version=N),
 * suspended so that they hold no HTTP worker thread, and woken by the apply path, by a recheck of
 * the copy while this process does not apply, at their deadline, or at shutdown. */
#ifndef CONSUMER_WAITERS_H
#define CONSUMER_WAITERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "httpd.h"
#include "lease.h"
#include "store.h"

struct waiters;
struct waiter;

/* Why a waiter woke. */
enum wait_outcome {
	WAIT_REACHED,	/* the copy is at the version or past it: read it again */
	WAIT_DEADLINE,	/* the wait is over: read it a last time */
	WAIT_SHUTDOWN,	/* the process stops: answer without reading */
};

/* Why a read could not wait. */
enum wait_refusal {
	WAIT_FULL,	/* max reads wait already */
	WAIT_CLOSED,	/* waiters_close() was called */
};

/* At most max waiters at once. While lease_held(lease) is false (a stand-by: another process
 * writes the copy) the copy is read back every recheck_ms, one query for all the users waited
 * for. Borrows store and lease, which must outlive it. The caller waiters_free()s the result;
 * NULL with err filled on failure. */
struct waiters *waiters_new(struct store *store, struct lease *lease, long max, long recheck_ms,
    char *err, size_t errlen);
/* Starts the thread of deadlines and rechecks. */
int waiters_start(struct waiters *w, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Takes a place for a read of user_id that waits for min_version until deadline_ms (mono_ms()).
 * From then on a report of the version wakes it, even before it is suspended, so the caller reads
 * the copy again after this call and only then suspends: a write confirmed between its first read
 * and this call is not missed. Returns NULL, with *why, when the read may not wait. The waiter
 * stays the registry's; the caller hands it back through waiters_suspend() or waiters_leave(). */
struct waiter *waiters_enter(struct waiters *w, int64_t user_id, int64_t min_version,
    int64_t deadline_ms, enum wait_refusal *why) __attribute__((warn_unused_result));
/* Gives the place back: the read needs no wait after all. */
void waiters_leave(struct waiters *w, struct waiter *wt);
/* From the handler of req: suspends req until the waiter wakes; then *outcome (which must live as
 * long as the request, e.g. in its http_set_context()) is set and resumed(req, arg) called on a
 * worker thread. Returns false, with *outcome set and req not suspended, when the waiter woke
 * already after waiters_enter(). Either way wt is gone after the call. */
bool waiters_suspend(struct waiters *w, struct waiter *wt, struct http_request *req,
    http_handler_fn resumed, enum wait_outcome *outcome);

/* The copy of user_id is at version or past it, confirmed by MongoDB: wakes the reads waiting for
 * that version or an older one. Any thread; cheap when nobody waits for the user. */
void waiters_copy_at(struct waiters *w, int64_t user_id, int64_t version);
/* The void * form of waiters_copy_at() for the applier's hook; arg is the struct waiters. */
void waiters_copy_at_fn(void *arg, int64_t user_id, int64_t version);

/* Wakes every waiter with WAIT_SHUTDOWN and refuses new ones (WAIT_CLOSED): before httpd_stop(),
 * so that no request is left suspended. */
void waiters_close(struct waiters *w);
/* Stops the thread and frees; after httpd_stop() and after the last waiters_copy_at(). */
void waiters_free(struct waiters *w);

#endif
