"""The checker: after the faults stop and the system drains, compares what the load generator was
told with PostgreSQL (users, outbox), the stream USER_EVENTS and MongoDB (the copy and its
history), and reports the issue's seven points as figures ending in one line:

  ops=… ok=… failed=… unknown=… kills=… pauses=… users=… events=… lost=0 double=0 …

lost is split by hop: lost_api_pg (an acknowledged write missing from PostgreSQL),
lost_outbox_stream (committed but never on the stream), lost_stream_mongo (on the stream but
never applied). double counts events that took effect more than once (a version twice in a user's
history, or two events for one version). Duplicates the stream holds or the consumer absorbed are
counted, not failures.
"""
from __future__ import annotations

import collections
import time

import requests

from system import MONGO_DB, System, consumer_pending, read_stream

FAIL_KEYS = ("lost", "double", "orphan", "mismatch", "phantom", "shown_deleted", "outbox",
             "pending", "ack_pending", "bad_answer", "drain_timeout")


def wait_drained(system: System, timeout: float = 90.0) -> dict:
    """Waits (bounded) until the outbox is empty and the consumer has nothing pending or awaiting
    ack, and MongoDB no longer changes; returns the last figures seen."""
    deadline = time.monotonic() + timeout
    last = {}
    stable = 0
    prev = None
    while time.monotonic() < deadline:
        try:
            outbox = system.pg.sql("SELECT count(*) FROM outbox")[0][0]
            pending, ack_pending = consumer_pending(system.nats_url())
            with system.ferret.client() as c:
                hist = c[MONGO_DB].user_notification_events.estimated_document_count()
            last = {"outbox": outbox, "pending": pending, "ack_pending": ack_pending}
            cur = (outbox, pending, ack_pending, hist)
            if outbox == 0 and pending == 0 and ack_pending == 0 and cur == prev:
                stable += 1
                if stable >= 3:
                    last["drain_timeout"] = 0
                    return last
            else:
                stable = 0
            prev = cur
        except Exception as e:  # noqa: BLE001 - a server still coming back
            last["error"] = repr(e)
        time.sleep(0.3)
    last["drain_timeout"] = 1
    return last


class Report:
    def __init__(self):
        self.figures = collections.OrderedDict()
        self.problems: list[str] = []

    def add(self, key, n=1):
        self.figures[key] = self.figures.get(key, 0) + n

    def problem(self, key, text):
        self.add(key)
        if len(self.problems) < 200:
            self.problems.append(f"{key}: {text}")

    @property
    def passed(self) -> bool:
        return all(self.figures.get(k, 0) == 0 for k in FAIL_KEYS)

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.figures.items()) + \
            (" result=PASS" if self.passed else " result=FAIL")

    def text(self) -> str:
        return "\n".join(self.problems + [self.line()])


def check(system: System, ops: list[dict], kills: int = 0, pauses: int = 0,
          drain_timeout: float = 90.0, seed: int | None = None) -> Report:
    rep = Report()
    fig = rep.figures
    for k in ("ops", "ok", "failed", "unknown", "kills", "pauses", "users", "events",
              "lost", "lost_api_pg", "lost_outbox_stream", "lost_stream_mongo", "double",
              "orphan", "mismatch", "phantom", "shown_deleted", "unknown_applied",
              "dup_stream", "dup_absorbed"):
        fig[k] = 0
    fig["ops"] = len(ops)
    for o in ops:
        fig[o["status"]] += 1
    fig["kills"], fig["pauses"] = kills, pauses
    for o in ops:
        if o.get("bad"):
            rep.problem("bad_answer", f"{o['kind']} of user {o['uid']}: {o['bad']}")

    # 5. drained: outbox empty, nothing pending or awaiting ack
    d = wait_drained(system, drain_timeout)
    for k in ("outbox", "pending", "ack_pending", "drain_timeout"):
        if d.get(k, 1 if k == "drain_timeout" else 0):
            rep.problem(k, f"after {drain_timeout}s of draining: {d}")
        else:
            fig[k] = 0

    pg = {r[0]: {"name": r[1], "email": r[2], "version": r[3]}
          for r in system.pg.sql("SELECT id, name, email, version FROM users")}
    msgs = read_stream(system.nats_url())
    with system.ferret.client() as c:
        db = c[MONGO_DB]
        docs = {d["_id"]: d for d in db.user_notifications.find()}
        hist = list(db.user_notification_events.find({}, {"user_id": 1, "version": 1, "event_id": 1,
                                                          "type": 1}))

    # The stream: events per user and version; the same event_id twice is a duplicate that
    # JetStream let through (outside the window); two event_ids for one version is a double.
    fig["events"] = len(msgs)
    by_id = collections.Counter()
    stream_uv = collections.defaultdict(set)      # (uid, version) -> {event_id}
    stream_email = {}
    for m in msgs:
        b = m["body"]
        p = b["payload"]
        eid = b["event_id"]
        by_id[eid] += 1
        if m["headers"].get("Nats-Msg-Id") != eid:
            rep.problem("mismatch", f"stream seq {m['seq']}: Nats-Msg-Id {m['headers'].get('Nats-Msg-Id')} "
                        f"is not event_id {eid}")
        if b["type"] != "user_snapshot":
            stream_uv[(p["id"], p["version"])].add(eid)
        stream_email.setdefault(p["email"].lower(), p["id"])
    fig["dup_stream"] = sum(n - 1 for n in by_id.values())
    for (uid, v), eids in stream_uv.items():
        if len(eids) > 1:
            rep.problem("double", f"user {uid} version {v} has {len(eids)} events in the stream: {sorted(eids)}")
    stream_max = collections.defaultdict(int)
    for (uid, v) in stream_uv:
        stream_max[uid] = max(stream_max[uid], v)

    # MongoDB's history: each version of each user once, no gaps.
    hist_uv = collections.Counter((h["user_id"], h["version"]) for h in hist)
    for (uid, v), n in hist_uv.items():
        if n > 1:
            rep.problem("double", f"user {uid} version {v} applied {n} times (history)")

    def hop_of_loss(uid, v):
        if (uid, v) in stream_uv:
            return "lost_stream_mongo"
        return "lost_outbox_stream"

    def lost(key, text):
        rep.problem("lost", text)
        rep.add(key)

    # Requests without an answer (unknown) or with a failure: did they take effect? Every create
    # and update writes an email of its own, so its event names it; a delete has its event.
    pg_email = {r["email"].lower(): uid for uid, r in pg.items()}
    deleted_on_stream = {m["body"]["payload"]["id"] for m in msgs if m["body"]["type"] == "user_deleted"}
    # A user's delete event belongs to its one ok delete if it has one, else to an unknown one.
    deletes = collections.defaultdict(set)
    for o in ops:
        if o["kind"] == "delete":
            deletes[o["uid"]].add(o["status"])
    for o in ops:
        if o["status"] == "ok":
            continue
        if o["kind"] == "delete":
            others = deletes[o["uid"]]
            took = o["uid"] in deleted_on_stream and "ok" not in others and \
                (o["status"] == "unknown" or "unknown" not in others)
        else:
            uid = pg_email.get(o["email"].lower()) or stream_email.get(o["email"].lower())
            took = uid is not None
            if took and o["uid"] is None:
                o["uid"] = uid
        if took and o["status"] == "unknown":
            fig["unknown_applied"] += 1
        elif took and o["status"] == "failed" and not (o["kind"] == "delete" and o.get("code") == 404):
            rep.problem("phantom", f"{o['kind']} of user {o['uid']} failed "
                        f"({o.get('code') or o.get('error')}) but was written")

    users = set(pg) | set(docs) | {o["uid"] for o in ops if o["uid"] is not None}
    fig["users"] = len(users)

    # 1. every acknowledged write is in PostgreSQL, on the stream and in MongoDB at its version
    for o in ops:
        if o["status"] != "ok":
            continue
        uid, v = o["uid"], o.get("version")
        if o["kind"] == "delete":
            if uid in pg:
                lost("lost_api_pg", f"user {uid} deleted (204) but still in PostgreSQL")
            doc = docs.get(uid)
            if doc is None or not doc.get("deleted"):
                lost(hop_of_loss(uid, v) if v else "lost_stream_mongo",
                     f"user {uid} deleted (204) but MongoDB has {doc and {k: doc.get(k) for k in ('version', 'deleted')}}")
            continue
        if uid not in pg and not (docs.get(uid) or {}).get("deleted") and stream_max.get(uid, 0) < v:
            lost("lost_api_pg", f"{o['kind']} of user {uid} to version {v} answered ok, user not in PostgreSQL")
            continue
        if uid in pg and pg[uid]["version"] < v:
            lost("lost_api_pg", f"{o['kind']} of user {uid} to version {v} answered ok, PostgreSQL has "
                 f"version {pg[uid]['version']}")
            continue
        if (uid, v) not in stream_uv:
            lost("lost_outbox_stream", f"{o['kind']} of user {uid} version {v} is not on the stream")
        elif (uid, v) not in hist_uv:
            lost("lost_stream_mongo", f"{o['kind']} of user {uid} version {v} is on the stream but "
                 f"not in MongoDB's history")

    # 2./3. per user: PostgreSQL and MongoDB agree (unknown writes included), no MongoDB copy
    # without its PostgreSQL row, deleted users hidden; 4. history complete and once.
    deleted_sample = []
    for uid in sorted(users):
        row, doc = pg.get(uid), docs.get(uid)
        if row is not None:
            if doc is None or doc.get("deleted") or doc.get("version") != row["version"]:
                have = doc and {k: doc.get(k) for k in ("version", "deleted")}
                if doc is None or (doc.get("version") or 0) < row["version"]:
                    lost(hop_of_loss(uid, row["version"]),
                         f"user {uid}: PostgreSQL at version {row['version']}, MongoDB has {have}")
                else:
                    rep.problem("mismatch", f"user {uid}: PostgreSQL at version {row['version']}, "
                                f"MongoDB has {have}")
                continue
            if (doc.get("name"), doc.get("email")) != (row["name"], row["email"]):
                rep.problem("mismatch", f"user {uid} version {row['version']}: PostgreSQL "
                            f"{row['name']!r} {row['email']!r}, MongoDB {doc.get('name')!r} {doc.get('email')!r}")
            final = row["version"]
            if stream_max.get(uid, 0) > final:
                rep.problem("mismatch", f"user {uid}: stream has version {stream_max[uid]}, "
                            f"PostgreSQL {final}")
        else:
            if doc is not None and not doc.get("deleted") and stream_max.get(uid, 0) > doc["version"]:
                lost("lost_stream_mongo", f"user {uid}: deleted at version {stream_max[uid]} on the "
                     f"stream, MongoDB still at version {doc['version']}")
                continue
            if doc is not None and not doc.get("deleted"):
                rep.problem("orphan", f"user {uid} is in MongoDB at version {doc.get('version')} "
                            f"but not in PostgreSQL")
                continue
            if doc is None:
                if stream_max.get(uid):
                    lost("lost_stream_mongo", f"user {uid}: on the stream up to version "
                         f"{stream_max[uid]}, nothing in MongoDB")
                continue
            final = doc["version"]
            deleted_sample.append(uid)
            if stream_max.get(uid, 0) > final:
                lost("lost_stream_mongo", f"deleted user {uid}: tombstone at version {final}, "
                     f"stream has version {stream_max[uid]}")
        for v in range(1, final + 1):
            if (uid, v) not in hist_uv:
                lost(hop_of_loss(uid, v), f"user {uid}: version {v} of {final} missing from the history")

    # Deleted users are hidden from the read API (a sample, to stay fast).
    base = system.consumer_url()
    for uid in deleted_sample[:40]:
        try:
            r = requests.get(f"{base}/notifications/user/{uid}", timeout=10)
            if r.status_code != 404:
                rep.problem("shown_deleted", f"GET /notifications/user/{uid} answered "
                            f"{r.status_code} for a deleted user")
        except requests.RequestException as e:
            rep.problem("shown_deleted", f"GET /notifications/user/{uid}: {e}")

    # 6. duplicates absorbed by the consumer(s), from their metrics
    for n in system.services("notification-consumer"):
        try:
            for line in requests.get(n.proc.url + "/metrics", timeout=5).text.splitlines():
                if line.startswith("consumer_events_stale_total"):
                    fig["dup_absorbed"] += int(float(line.rsplit(" ", 1)[1]))
        except requests.RequestException:
            pass
    if seed is not None:
        fig["seed"] = seed
    return rep
