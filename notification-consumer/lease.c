/* The lease lives in stream CONSUMER_LEASES as the last message on consumer.lease.<durable>:
 * {"owner", "until_us"}. Taking or renewing it is a publish with Nats-Expected-Last-Subject-
 * Sequence, which JetStream applies atomically, so two processes cannot both win. */
#include "lease.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "natsconn.h"
#include "util.h"

#define LEASE_STREAM "CONSUMER_LEASES"

struct lease {
	natsConnection *nc;
	jsCtx *js;
	char subject[256];
	char writer_subject[300];	/* where another writer announces itself */
	atomic_llong writer_until_us;	/* what it announced last; 0: never */
	char *owner;
	long ttl_ms;
	long timeout_ms;		/* of each read or write */
	bool stream_ok;
	uint64_t seq;			/* our last record, for the release */
	atomic_llong held_until;	/* monotonic ms; 0 when not held */
	atomic_ullong term;		/* times taken anew, see lease_term() */
	atomic_bool stop;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;		/* guards holder */
	char holder[384];
	struct metrics_series *m_held, *m_acquired;
};

struct lease *
lease_new(natsConnection *nc, const char *durable, const char *owner, long ttl_ms,
    long timeout_ms, char *err, size_t errlen)
{
	struct lease *l = calloc(1, sizeof(*l));
	jsOptions jo;

	if (l == NULL || (l->owner = strdup(owner)) == NULL) {
		free(l);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->nc = nc;
	l->ttl_ms = ttl_ms;
	l->timeout_ms = timeout_ms;
	snprintf(l->subject, sizeof(l->subject), "consumer.lease.%s", durable);
	snprintf(l->writer_subject, sizeof(l->writer_subject), "consumer.lease.%s.writer", durable);
	jsOptions_Init(&jo);
	jo.Wait = timeout_ms;
	if (natsConnection_JetStream(&l->js, nc, &jo) != NATS_OK) {
		snprintf(err, errlen, "could not open a JetStream context for the lease");
		free(l->owner);
		free(l);
		return NULL;
	}
	pthread_mutex_init(&l->lock, NULL);
	snprintf(l->holder, sizeof(l->holder), "nobody yet");
	l->m_held = metrics_gauge("consumer_lease_held", "1 while this process holds the lease and "
	    "applies events, 0 while it stands by", NULL);
	l->m_acquired = metrics_counter("consumer_lease_acquired_total", "Times this process took "
	    "the lease anew (not renewals)", NULL);
	metrics_set(l->m_held, 0);
	return l;
}

static void
set_holder(struct lease *l, const char *who)
{
	pthread_mutex_lock(&l->lock);
	snprintf(l->holder, sizeof(l->holder), "%s", who);
	pthread_mutex_unlock(&l->lock);
}

static bool
stream_ensure(struct lease *l)
{
	jsStreamInfo *si = NULL;
	jsStreamConfig sc;
	const char *subjects[1] = { "consumer.lease.>" };

	if (l->stream_ok)
		return true;
	if (js_GetStreamInfo(&si, l->js, LEASE_STREAM, NULL, NULL) == NATS_OK) {
		jsStreamInfo_Destroy(si);
		return l->stream_ok = true;
	}
	jsStreamConfig_Init(&sc);
	sc.Name = LEASE_STREAM;
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Storage = js_FileStorage;
	sc.MaxMsgsPerSubject = 1;
	si = NULL;
	if (js_AddStream(&si, l->js, &sc, NULL, NULL) == NATS_OK ||
	    js_GetStreamInfo(&si, l->js, LEASE_STREAM, NULL, NULL) == NATS_OK) {
		jsStreamInfo_Destroy(si);
		return l->stream_ok = true;
	}
	return false;
}

/* Publishes {owner, until_us} expecting the subject's last sequence to be seq. */
static bool
lease_write(struct lease *l, uint64_t seq, int64_t until_us)
{
	char body[256], expect[32];
	natsMsg *m = NULL;
	jsPubAck *pa = NULL;
	jsPubOptions po;
	natsStatus s;
	json_t *j = json_pack("{s:s, s:I}", "owner", l->owner, "until_us", (json_int_t)until_us);
	char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	if (txt == NULL)
		return false;
	snprintf(body, sizeof(body), "%s", txt);
	free(txt);
	snprintf(expect, sizeof(expect), "%" PRIu64, seq);
	s = natsMsg_Create(&m, l->subject, NULL, body, (int)strlen(body));
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", expect);
	if (s == NATS_OK) {
		jsPubOptions_Init(&po);
		po.MaxWait = l->timeout_ms;
		s = js_PublishMsg(&pa, l->js, m, &po, NULL);
	}
	if (s == NATS_OK)
		l->seq = pa->Sequence;
	jsPubAck_Destroy(pa);
	natsMsg_Destroy(m);
	return s == NATS_OK;
}

/* Reads what another writer of the copy announced last (lease_announce_writer()). */
static void
writer_read(struct lease *l)
{
	natsMsg *m = NULL;
	jsErrCode jerr = 0;

	if (js_GetLastMsg(&m, l->js, LEASE_STREAM, l->writer_subject, NULL, &jerr) != NATS_OK)
		return;
	{
		json_t *j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);

		if (j != NULL && json_is_integer(json_object_get(j, "until_us")))
			atomic_store(&l->writer_until_us,
			    (long long)json_integer_value(json_object_get(j, "until_us")));
		json_decref(j);
	}
	natsMsg_Destroy(m);
}

int64_t
lease_writer_until(struct lease *l)
{
	return atomic_load(&l->writer_until_us);
}

int
lease_announce_writer(jsCtx *js, const char *durable, int64_t until_us, long timeout_ms, char *err,
    size_t errlen)
{
	char subject[300], body[64];
	jsPubOptions po;
	natsStatus s;

	snprintf(subject, sizeof(subject), "consumer.lease.%s.writer", durable);
	snprintf(body, sizeof(body), "{\"until_us\":%lld}", (long long)until_us);
	jsPubOptions_Init(&po);
	po.MaxWait = timeout_ms;
	s = js_Publish(NULL, js, subject, body, (int)strlen(body), &po, NULL);
	if (s != NATS_OK) {
		snprintf(err, errlen, "could not announce a writer on \"%s\": %s", subject,
		    natsStatus_GetText(s));
		return -1;
	}
	return 0;
}

/* One round: read the record, take or renew it when it is ours, free or lapsed. */
static void
lease_try(struct lease *l)
{
	int64_t start = mono_ms(), now_us = wall_us(), until_us = 0;
	natsMsg *m = NULL;
	jsErrCode jerr = 0;
	uint64_t seq = 0;
	char owner[384] = "";
	natsStatus s;
	bool was_held = lease_held(l);

	if (!natsconn_ok(l->nc) || !stream_ensure(l))
		return;
	writer_read(l);
	s = js_GetLastMsg(&m, l->js, LEASE_STREAM, l->subject, NULL, &jerr);
	if (s == NATS_OK) {
		json_t *j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);

		seq = natsMsg_GetSequence(m);
		if (j != NULL && json_is_string(json_object_get(j, "owner")))
			snprintf(owner, sizeof(owner), "%s", json_string_value(json_object_get(j, "owner")));
		if (j != NULL)
			until_us = json_integer_value(json_object_get(j, "until_us"));
		json_decref(j);
		natsMsg_Destroy(m);
	} else if (s != NATS_NOT_FOUND && jerr != JSNoMessageFoundErr) {
		return;	/* unknown: the local validity runs out by itself */
	}
	if (owner[0] && strcmp(owner, l->owner) != 0 && until_us > now_us) {
		if (was_held)
			log_warnx("lease: %s took over; standing by", owner);
		atomic_store(&l->held_until, 0);
		set_holder(l, owner);
		return;
	}
	if (!lease_write(l, seq, now_us + (int64_t)l->ttl_ms * 1000)) {
		atomic_store(&l->held_until, 0);
		return;	/* another process won the race, or NATS failed: look again */
	}
	/* Counted before the validity is set, so that an applier that sees the lease held sees the
	 * new term too. */
	if (!was_held) {
		atomic_fetch_add(&l->term, 1);
		metrics_add(l->m_acquired, 1);
	}
	/* A fifth of the TTL covers clock differences and the time this round took. */
	atomic_store(&l->held_until, start + l->ttl_ms - l->ttl_ms / 5);
	set_holder(l, l->owner);
	if (!was_held)
		log_info("lease: applying as %s (lease %s on %s)", l->owner, LEASE_STREAM, l->subject);
}

static void *
lease_run(void *arg)
{
	struct lease *l = arg;
	/* Renew well within the TTL; a stand-by also looks at least every second, so a lease handed
	 * over at shutdown is taken at once. */
	long every = l->ttl_ms / 4 < 1000 ? l->ttl_ms / 4 : 1000;

	while (!atomic_load(&l->stop)) {
		int64_t next = mono_ms() + every;

		lease_try(l);
		/* Each round, so that a lease that lapsed without a round that took it away (NATS gone)
		 * shows too. */
		metrics_set(l->m_held, lease_held(l) ? 1 : 0);
		while (!atomic_load(&l->stop) && mono_ms() < next)
			shutdown_sleep_ms(50);
	}
	return NULL;
}

int
lease_start(struct lease *l, char *err, size_t errlen)
{
	int e = pthread_create(&l->thread, NULL, lease_run, l);

	if (e != 0) {
		snprintf(err, errlen, "could not start the lease thread: %s", strerror(e));
		return -1;
	}
	l->started = true;
	return 0;
}

bool
lease_held(struct lease *l)
{
	return mono_ms() < atomic_load(&l->held_until);
}

uint64_t
lease_term(struct lease *l)
{
	return atomic_load(&l->term);
}

void
lease_describe(struct lease *l, char *out, size_t outlen)
{
	pthread_mutex_lock(&l->lock);
	if (lease_held(l))
		snprintf(out, outlen, "applying");
	else
		snprintf(out, outlen, "standby: lease held by %s", l->holder);
	pthread_mutex_unlock(&l->lock);
}

void
lease_free(struct lease *l)
{
	if (l == NULL)
		return;
	atomic_store(&l->stop, true);
	if (l->started)
		pthread_join(l->thread, NULL);
	/* Hand over at once rather than make a stand-by wait for the TTL. */
	if (lease_held(l) && natsconn_ok(l->nc) && lease_write(l, l->seq, 0))
		log_info("lease: released");
	jsCtx_Destroy(l->js);
	pthread_mutex_destroy(&l->lock);
	free(l->owner);
	free(l);
}
