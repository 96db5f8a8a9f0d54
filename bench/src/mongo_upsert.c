/* Baseline of the consumer's MongoDB side: the same version-guarded upsert and history insert per
 * event, in one plain loop, for the synthetic users the benchmark puts in the outbox. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mongoc/mongoc.h>

#include "bench_util.h"

/* Usage: mongo_upsert <uri> <count> [mode] [users]: mode 0 upserts only, 1 (default) adds the
 * history insert. Event g (1, 2, ...) is
 * version (g - 1) / users + 1 of user (g - 1) % users + 1, as the benchmark's outbox fill makes
 * them; users defaults to count (one version 1 event per user). */
int
main(int argc, char **argv)
{
	mongoc_client_t *cl;
	mongoc_collection_t *coll, *hist;
	bson_error_t e;
	long n, users;
	int with_history;
	char name[64], email[96], eid[64];
	const char *ts = "2026-11-29T10:00:00.123456Z";

	if (argc < 3) {
		fprintf(stderr, "usage: mongo_upsert <uri> <count> [mode 0|1] [users]\n");
		return 2;
	}
	n = atol(argv[2]);
	with_history = argc > 3 ? atoi(argv[3]) : 1;
	users = argc > 4 ? atol(argv[4]) : n;
	if (n < 1 || users < 1) {
		fprintf(stderr, "mongo_upsert: count and users must be at least 1\n");
		return 2;
	}
	mongoc_init();
	cl = mongoc_client_new(argv[1]);
	if (cl == NULL) {
		fprintf(stderr, "mongo_upsert: bad uri\n");
		return 1;
	}
	coll = mongoc_client_get_collection(cl, "bench_db", "user_notifications");
	hist = mongoc_client_get_collection(cl, "bench_db", "user_notification_events");
	/* The consumer's two history indexes, one command each as FerretDB 1.24 wants. */
	for (int k = 0; k < 2; k++) {
		bson_t *cmd = k == 0 ?
		    BCON_NEW("createIndexes", BCON_UTF8("user_notification_events"), "indexes", "[", "{",
			"key", "{", "event_id", BCON_INT32(1), "}", "name", BCON_UTF8("event_id_unique"),
			"unique", BCON_BOOL(true), "}", "]") :
		    BCON_NEW("createIndexes", BCON_UTF8("user_notification_events"), "indexes", "[", "{",
			"key", "{", "user_id", BCON_INT32(1), "version", BCON_INT32(1), "}",
			"name", BCON_UTF8("user_id_version"), "}", "]");

		if (!mongoc_collection_write_command_with_opts(hist, cmd, NULL, NULL, &e)) {
			fprintf(stderr, "mongo_upsert: could not create an index: %s\n", e.message);
			return 1;
		}
		bson_destroy(cmd);
	}
	double *lat = calloc((size_t)n, sizeof(double));
	double t0 = now_s();
	for (long i = 0; i < n; i++) {
		int64_t id = i % users + 1, version = i / users + 1, g = i + 1;
		const char *type = version == 1 ? "user_created" : "user_updated";
		double t1 = now_s();

		snprintf(name, sizeof(name), "Bench User %lld", (long long)id);
		snprintf(email, sizeof(email), "bench-%lld@example.com", (long long)id);
		snprintf(eid, sizeof(eid), "00000000-0000-4000-8000-%012lld", (long long)g);
		bson_t *filter = BCON_NEW("_id", BCON_INT64(id), "version", "{", "$lt", BCON_INT64(version),
		    "}");
		bson_t *update = BCON_NEW("$set", "{", "user_id", BCON_INT64(id), "name", BCON_UTF8(name),
		    "email", BCON_UTF8(email), "updated_at", BCON_UTF8(ts),
		    "version", BCON_INT64(version), "deleted", BCON_BOOL(false), "event_id", BCON_UTF8(eid),
		    "event_type", BCON_UTF8(type), "committed_at", BCON_UTF8(ts),
		    "published_at", BCON_UTF8(ts), "applied_at", BCON_UTF8(ts),
		    "stream_seq", BCON_INT64(g), "}");
		bson_t *opts = BCON_NEW("upsert", BCON_BOOL(true));

		if (!mongoc_collection_update_one(coll, filter, update, opts, NULL, &e)) {
			fprintf(stderr, "mongo_upsert: could not upsert: %s\n", e.message);
			return 1;
		}
		if (with_history) {
			bson_t *h = BCON_NEW("_id", BCON_UTF8(eid), "event_id", BCON_UTF8(eid), "user_id", BCON_INT64(id),
			    "type", BCON_UTF8(type), "version", BCON_INT64(version),
			    "name", BCON_UTF8(name), "email", BCON_UTF8(email), "updated_at", BCON_UTF8(ts),
			    "deleted", BCON_BOOL(false), "committed_at", BCON_UTF8(ts),
			    "published_at", BCON_UTF8(ts), "applied_at", BCON_UTF8(ts),
			    "stream_seq", BCON_INT64(g), "superseded", BCON_BOOL(false));

			if (!mongoc_collection_insert_one(hist, h, NULL, NULL, &e)) {
				fprintf(stderr, "mongo_upsert: could not insert history: %s\n", e.message);
				return 1;
			}
			bson_destroy(h);
		}
		bson_destroy(filter);
		bson_destroy(update);
		bson_destroy(opts);
		lat[i] = now_s() - t1;
	}
	double t = now_s() - t0;
	/* How the cost of one event grows with the collections: the first and the last tenth. */
	double first = 0, last = 0;
	long tenth = n / 10 > 0 ? n / 10 : 1;
	for (long i = 0; i < tenth; i++) {
		first += lat[i];
		last += lat[n - 1 - i];
	}
	qsort(lat, (size_t)n, sizeof(double), cmp_double);
	printf("{\"events\": %ld, \"seconds\": %.4f, \"rate\": %.1f, \"p50_ms\": %.4f, \"p99_ms\": %.4f, "
	    "\"first_tenth_mean_ms\": %.4f, \"last_tenth_mean_ms\": %.4f}\n",
	    n, t, n / t, lat[n / 2] * 1e3, lat[(n * 99) / 100] * 1e3, first / tenth * 1e3, last / tenth * 1e3);
	mongoc_collection_destroy(coll);
	mongoc_collection_destroy(hist);
	mongoc_client_destroy(cl);
	mongoc_cleanup();
	return 0;
}
