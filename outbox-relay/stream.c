/* Provisions USER_EVENTS idempotently (created when missing, updated where safe, reported where not) and reads its state. */
#include "stream.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NS_PER_MS 1000000LL

static const char *wanted_subjects[] = { EVENT_STREAM_SUBJECTS };

void
stream_config_wanted(const struct relay_settings *s, jsStreamConfig *cfg)
{
	jsStreamConfig_Init(cfg);
	cfg->Name = EVENT_STREAM;
	cfg->Subjects = wanted_subjects;
	cfg->SubjectsLen = 1;
	cfg->Storage = js_FileStorage;
	cfg->Retention = js_LimitsPolicy;
	cfg->Duplicates = (int64_t)s->duplicate_window_ms * NS_PER_MS;
	cfg->Replicas = s->stream_replicas;
	cfg->MaxAge = (int64_t)s->stream_max_age_ms * NS_PER_MS;
	cfg->MaxBytes = s->stream_max_bytes > 0 ? s->stream_max_bytes : -1;
	cfg->MaxMsgs = -1;
	cfg->MaxMsgsPerSubject = -1;
	/* With a limit, a full stream refuses new events (the relay retries) instead of silently
	 * dropping old ones that a consumer may not have read yet. */
	cfg->Discard = (cfg->MaxAge > 0 || cfg->MaxBytes > 0) ? js_DiscardNew : js_DiscardOld;
}

static void
appendf(char *buf, size_t len, const char *fmt, ...)
{
	size_t n = strlen(buf);
	va_list ap;

	if (n + 3 >= len)
		return;
	if (n > 0) {
		strcpy(buf + n, ", ");
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(buf + n, len - n, fmt, ap);
	va_end(ap);
}

static bool
subjects_cover(const jsStreamConfig *c, const char *subject)
{
	for (int i = 0; i < c->SubjectsLen; i++)
		if (c->Subjects[i] != NULL && strcmp(c->Subjects[i], subject) == 0)
			return true;
	return false;
}

static int64_t
limit_or_none(int64_t v)
{
	return v <= 0 ? -1 : v;
}

void
stream_plan(const jsStreamConfig *have, const jsStreamConfig *want, jsStreamConfig *merged,
    struct stream_plan *plan)
{
	memset(plan, 0, sizeof(*plan));
	*merged = *have;

	if (have->Storage != want->Storage)
		appendf(plan->problems, sizeof(plan->problems), "storage is %s, wanted %s: JetStream "
		    "cannot change it in place (recreate the stream to change it)",
		    have->Storage == js_FileStorage ? "file" : "memory",
		    want->Storage == js_FileStorage ? "file" : "memory");
	if (have->Retention != want->Retention)
		appendf(plan->problems, sizeof(plan->problems), "retention is not limits: JetStream "
		    "cannot change it in place, and interest or work-queue retention can drop events "
		    "before the consumer exists");
	if (!subjects_cover(have, EVENT_STREAM_SUBJECTS))
		appendf(plan->problems, sizeof(plan->problems), "subjects do not include \"%s\": "
		    "subjects are not changed on an existing stream", EVENT_STREAM_SUBJECTS);
	if (have->Duplicates != want->Duplicates) {
		appendf(plan->changes, sizeof(plan->changes), "duplicate window %" PRId64 "ms -> %" PRId64
		    "ms", have->Duplicates / NS_PER_MS, want->Duplicates / NS_PER_MS);
		merged->Duplicates = want->Duplicates;
		plan->update = true;
	}
	if (limit_or_none(have->MaxAge) != limit_or_none(want->MaxAge)) {
		appendf(plan->changes, sizeof(plan->changes), "max age %" PRId64 "ms -> %" PRId64 "ms",
		    have->MaxAge / NS_PER_MS, want->MaxAge / NS_PER_MS);
		merged->MaxAge = want->MaxAge;
		plan->update = true;
	}
	if (limit_or_none(have->MaxBytes) != limit_or_none(want->MaxBytes)) {
		appendf(plan->changes, sizeof(plan->changes), "max bytes %" PRId64 " -> %" PRId64,
		    limit_or_none(have->MaxBytes), limit_or_none(want->MaxBytes));
		merged->MaxBytes = want->MaxBytes;
		plan->update = true;
	}
	if (limit_or_none(have->MaxMsgs) != -1 || limit_or_none(have->MaxMsgsPerSubject) != -1) {
		appendf(plan->changes, sizeof(plan->changes), "message count limits removed");
		merged->MaxMsgs = -1;
		merged->MaxMsgsPerSubject = -1;
		plan->update = true;
	}
	if (have->Discard != want->Discard) {
		appendf(plan->changes, sizeof(plan->changes), "discard %s -> %s",
		    have->Discard == js_DiscardNew ? "new" : "old",
		    want->Discard == js_DiscardNew ? "new" : "old");
		merged->Discard = want->Discard;
		plan->update = true;
	}
	if (have->Replicas != want->Replicas && !(have->Replicas <= 1 && want->Replicas <= 1)) {
		appendf(plan->changes, sizeof(plan->changes), "replicas %" PRId64 " -> %" PRId64,
		    have->Replicas, want->Replicas);
		merged->Replicas = want->Replicas;
		plan->update = true;
	}
	plan->unsafe = plan->problems[0] != '\0';
}

static void
js_error_text(natsStatus s, jsErrCode jerr, char *out, size_t outlen)
{
	const char *last = nats_GetLastError(NULL);

	if (jerr != 0)
		snprintf(out, outlen, "%s (JetStream error %d)", last && *last ? last :
		    natsStatus_GetText(s), (int)jerr);
	else
		snprintf(out, outlen, "%s", last && *last ? last : natsStatus_GetText(s));
}

int
stream_provision(jsCtx *js, const struct relay_settings *s, char *note, size_t notelen,
    bool *warn, bool *created, char *err, size_t errlen)
{
	jsStreamConfig want, merged;
	jsStreamInfo *si = NULL, *updated = NULL;
	struct stream_plan plan;
	jsErrCode jerr = 0;
	natsStatus st;
	char why[256];
	int rc = -1;

	note[0] = '\0';
	*warn = false;
	*created = false;
	stream_config_wanted(s, &want);
	st = js_GetStreamInfo(&si, js, EVENT_STREAM, NULL, &jerr);
	if (st == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
		jerr = 0;
		st = js_AddStream(&si, js, &want, NULL, &jerr);
		if (st != NATS_OK) {
			js_error_text(st, jerr, why, sizeof(why));
			snprintf(err, errlen, "could not create stream \"%s\": %s", EVENT_STREAM, why);
			goto done;
		}
		snprintf(note, notelen, "created stream \"%s\" on \"%s\"", EVENT_STREAM, EVENT_STREAM_SUBJECTS);
		*created = true;
		rc = 0;
		goto done;
	}
	if (st != NATS_OK) {
		js_error_text(st, jerr, why, sizeof(why));
		snprintf(err, errlen, "could not look up stream \"%s\": %s", EVENT_STREAM, why);
		goto done;
	}
	stream_plan(si->Config, &want, &merged, &plan);
	if (plan.update) {
		st = js_UpdateStream(&updated, js, &merged, NULL, &jerr);
		if (st != NATS_OK) {
			js_error_text(st, jerr, why, sizeof(why));
			snprintf(note, notelen, "stream \"%s\" left as it is: could not update (%s): %s",
			    EVENT_STREAM, plan.changes, why);
			*warn = true;
		} else {
			snprintf(note, notelen, "updated stream \"%s\": %s", EVENT_STREAM, plan.changes);
		}
	}
	if (plan.unsafe) {
		size_t n = strlen(note);

		*warn = true;
		snprintf(note + n, notelen - n, "%sstream \"%s\" differs and was left alone: %s",
		    n > 0 ? "; " : "", EVENT_STREAM, plan.problems);
	}
	if (!subjects_cover(si->Config, EVENT_STREAM_SUBJECTS)) {
		snprintf(err, errlen, "stream \"%s\" exists but does not take \"%s\"", EVENT_STREAM,
		    EVENT_STREAM_SUBJECTS);
		goto done;
	}
	rc = 0;
done:
	jsStreamInfo_Destroy(si);
	jsStreamInfo_Destroy(updated);
	return rc;
}

int
stream_inspect(jsCtx *js, const struct relay_settings *s, struct stream_look *out, char *note,
    size_t notelen, bool *warn, char *err, size_t errlen)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus st;
	char why[256];

	memset(out, 0, sizeof(*out));
	note[0] = '\0';
	*warn = false;
	st = js_GetStreamInfo(&si, js, EVENT_STREAM, NULL, &jerr);
	if (st == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
		if (stream_provision(js, s, note, notelen, warn, &out->created_now, err, errlen) != 0)
			return -1;
		jerr = 0;
		st = js_GetStreamInfo(&si, js, EVENT_STREAM, NULL, &jerr);
	}
	if (st != NATS_OK) {
		js_error_text(st, jerr, why, sizeof(why));
		snprintf(err, errlen, "could not look up stream \"%s\": %s", EVENT_STREAM, why);
		jsStreamInfo_Destroy(si);
		return -1;
	}
	out->created_ns = si->Created;
	/* A new, empty stream says 0; its first event will be 1. */
	out->first_seq = si->State.FirstSeq > 0 ? si->State.FirstSeq : 1;
	out->last_seq = si->State.LastSeq;
	out->max_age_ms = si->Config->MaxAge / NS_PER_MS;
	out->duplicates_ms = si->Config->Duplicates / NS_PER_MS;
	out->sealed = si->Config->Sealed;
	jsStreamInfo_Destroy(si);
	return 0;
}
