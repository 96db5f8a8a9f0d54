/* The nudge connection: one shared natsConnection, and a thread that publishes the nudges asked
 * for, at most one per NUDGE_INTERVAL_MS: a burst of commits wakes the relay once, and a commit
 * costs its request an atomic flag, and a signal when the sender is idle (a publish costs
 * several microseconds, which one nudge per commit used to cost every request). The connection
 * sends as soon as it publishes, from the sender's thread: nats.c's flusher thread would be woken
 * for each nudge, for nothing to gather. */
#include "nudge.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "natsconn.h"

/* The relay's claim is its own work; waking it more often than this gains nothing. */
#define NUDGE_INTERVAL_MS 5

static natsConnection *nudge_nc;
static struct metrics_series *nudges_sent, *nudges_skipped, *nudges_merged;
static atomic_bool wanted;	/* a commit asked for a nudge not yet sent */
static pthread_t sender;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool stopping;		/* under lock */

static void
publish(void)
{
	/* While disconnected nats.c would buffer; a stale nudge is worthless, so skip it. */
	if (!natsconn_ok(nudge_nc) ||
	    natsConnection_Publish(nudge_nc, OUTBOX_NUDGE_SUBJECT, NULL, 0) != NATS_OK) {
		metrics_add(nudges_skipped, 1);
		return;
	}
	metrics_add(nudges_sent, 1);
}

static void *
sender_run(void *arg)
{
	const struct timespec interval = { 0, NUDGE_INTERVAL_MS * 1000000L };

	(void)arg;
	pthread_mutex_lock(&lock);
	while (!stopping) {
		if (!atomic_exchange(&wanted, false)) {
			pthread_cond_wait(&cond, &lock);
			continue;
		}
		pthread_mutex_unlock(&lock);
		publish();
		nanosleep(&interval, NULL);	/* commits meanwhile only set the flag */
		pthread_mutex_lock(&lock);
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

int
nudge_start(const struct nats_settings *nats, char *err, size_t errlen)
{
	nudges_sent = metrics_counter("outbox_nudges_total", "Relay wake-ups after commits",
	    "result", "sent", NULL);
	nudges_skipped = metrics_counter("outbox_nudges_total", "Relay wake-ups after commits",
	    "result", "skipped", NULL);
	nudges_merged = metrics_counter("outbox_nudges_total", "Relay wake-ups after commits",
	    "result", "merged", NULL);
	if (nats->url == NULL || *nats->url == '\0') {
		log_info("NATS_URL is empty: no wake-up nudges, the relay finds new outbox rows by "
		    "polling");
		return 0;
	}
	nudge_nc = natsconn_open(nats, "user-api", true, err, errlen);
	if (nudge_nc == NULL)
		return -1;
	if (pthread_create(&sender, NULL, sender_run, NULL) != 0) {
		log_warnx("could not start the thread that sends nudges: the relay finds new outbox "
		    "rows by polling");
		natsConnection_Destroy(nudge_nc);
		nudge_nc = NULL;
		return 0;
	}
	(void)pthread_setname_np(sender, "nudge");
	return 0;
}

void
nudge_send(void)
{
	if (nudge_nc == NULL)		/* nudges are off */
		return;
	if (atomic_exchange(&wanted, true)) {
		metrics_add(nudges_merged, 1);	/* the nudge already asked for covers this commit */
		return;
	}
	pthread_mutex_lock(&lock);
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&lock);
}

void
nudge_stop(void)
{
	if (nudge_nc == NULL)
		return;
	pthread_mutex_lock(&lock);
	stopping = true;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&lock);
	pthread_join(sender, NULL);
	natsConnection_FlushTimeout(nudge_nc, 500);
	natsConnection_Destroy(nudge_nc);
	nudge_nc = NULL;
}
