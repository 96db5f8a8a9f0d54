"""The checker: after the faults stop and the system drains, compares what the load generator was
told and what PostgreSQL committed (every outbox row, kept by a trigger in the table
chaos_committed, see system.py) with the stream USER_EVENTS and MongoDB (the copy, its history
and the read API), and ends with one line of figures:

  ops=… ok=… … lost=0 … double=0 out_of_order=0 two_writers=0 … result=PASS

It judges effect, not arrival. A history entry is *applied* when the event took effect (the
consumer writes superseded=false), *superseded* when it arrived out of date and changed nothing.
Every committed (user, version) must have exactly one applied entry, and that entry's event id,
type, name, email and deleted flag must be those PostgreSQL committed for that version, except
that a deleted user's entries keep no name and no email (the consumer erases them when it applies
the deletion): for such a user the name and email are the one thing not compared, and finding
them is a failure of its own (personal).

Failures (any of these above 0 fails the run):
  lost                all losses, split by hop: lost_api_pg (an acknowledged write PostgreSQL does
                      not have), lost_outbox_stream (committed, never on the stream),
                      lost_stream_mongo (on the stream, no history entry at all), lost_stream
                      (took effect, but the stream no longer holds it at the end: it lost what
                      it acknowledged and the relay did not publish it again, so a replay or a
                      new consumer would miss it)
  skipped             a committed version that only has superseded entries: it arrived, but never
                      took effect (a superseded entry never stands in for an applied one)
  double              a version with more than one applied entry, or an event that took effect
                      again after its entry was written (the entry's `reapplied` count)
  out_of_order        an applied entry for version v applied after one for a higher version of the
                      same user (by applied_at), or a superseded event that took effect later
  two_writers         two consumer processes applied events of one user at overlapping times: see
                      writer_overlaps() for the rule
  mismatch            content that differs from what PostgreSQL committed (history entry, stream
                      message, final document), or a copy ahead of PostgreSQL
  personal            a deleted user's name or email still there: in a user_deleted event (as
                      committed, or on the stream), in any of the user's history entries, in its
                      tombstone, or in what GET /notifications/user/{id}/events answers
  orphan              a live MongoDB document whose user PostgreSQL never deleted and does not have
  phantom             a write answered as failed that PostgreSQL committed, or an event on the
                      stream or in the history that PostgreSQL never committed
  shown_deleted       GET /notifications/user/{id} does not answer 404 for a deleted user
  bad_answer          user-api answered a version that does not follow the last one
  bad_read            the consumer's read API answered something other than the copy should hold
                      (GET /notifications/user/{id}, GET /notifications/user/{id}/events)
  dup_applied         a message duplicated in the stream (outside the duplicate window) that took
                      effect a second time
  outbox, pending, ack_pending, drain_timeout: the system did not drain

Counted, never failed: committed (events PostgreSQL committed), events (messages in the stream),
applied, superseded (history entries of each kind), unknown_applied (unanswered writes that were
committed), dup_stream (messages whose event_id the stream already held: republished outside the
duplicate window) = dup_absorbed (the consumer took them without effect) + dup_applied, and
stale_acked (events the consumers acknowledged without effect since their last start, from
their metrics: redeliveries and duplicates).
"""
from __future__ import annotations

import collections
import datetime
import time

import requests

from system import COMMITTED_TABLE, MONGO_DB, System, consumer_pending, read_stream

FAIL_KEYS = ("lost", "skipped", "double", "out_of_order", "two_writers", "orphan", "mismatch",
             "personal", "phantom", "shown_deleted", "bad_answer", "bad_read", "dup_applied", "outbox",
             "pending", "ack_pending", "drain_timeout")
SNAPSHOT = "user_snapshot"


def wait_drained(system: System, timeout: float = 90.0) -> dict:
    """Waits (bounded) until no outbox row waits to be published (the view outbox_pending: the
    relay keeps published rows for RELAY_RETAIN, so the table itself does not empty), the consumer
    has nothing pending or awaiting ack, and MongoDB no longer changes; returns the last figures
    seen, with drained_at: the time.monotonic() at which it was drained and the copy had stopped
    changing (within 0.3 s)."""
    deadline = time.monotonic() + timeout
    drained_at = None
    last = {}
    stable = 0
    prev = None
    while time.monotonic() < deadline:
        try:
            outbox = system.pg.sql("SELECT count(*) FROM outbox_pending")[0][0]
            pending, ack_pending = consumer_pending(system.nats_url())
            with system.ferret.client() as c:
                hist = c[MONGO_DB].user_notification_events.estimated_document_count()
            last = {"outbox": outbox, "pending": pending, "ack_pending": ack_pending}
            cur = (outbox, pending, ack_pending, hist)
            if outbox == 0 and pending == 0 and ack_pending == 0 and cur == prev:
                stable += 1
                if stable == 1:   # the first look at which the copy stopped changing
                    drained_at = time.monotonic()
                if stable >= 3:
                    last["drain_timeout"] = 0
                    last["drained_at"] = drained_at
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
        self.drained_at: float | None = None  # time.monotonic() when it was found drained

    def add(self, key, n=1):
        self.figures[key] = self.figures.get(key, 0) + n

    def problem(self, key, text):
        self.add(key)
        if len(self.problems) < 200:
            self.problems.append(f"{key}: {text}")

    @property
    def passed(self) -> bool:
        return all(self.figures.get(k, 0) == 0 for k in FAIL_KEYS)

    def failures(self) -> dict:
        return {k: self.figures[k] for k in FAIL_KEYS if self.figures.get(k, 0)}

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.figures.items()) + \
            (" result=PASS" if self.passed else " result=FAIL")

    def text(self) -> str:
        return "\n".join(self.problems + [self.line()])


def applied_time(s) -> float | None:
    """applied_at (RFC 3339, written by the consumer) as seconds since the epoch."""
    if not isinstance(s, str):
        return None
    try:
        return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def content(ev: dict) -> tuple:
    """What one event says about its user: (type, name, email, deleted)."""
    return (ev.get("type"), ev.get("name"), ev.get("email"), bool(ev.get("deleted")))


def impersonal(c: tuple) -> tuple:
    """content() without the personal data: what a deleted user's history entry must still match."""
    return (c[0], None, None, c[3])


def personal(d: dict) -> bool:
    """Whether d (an event's payload, a history entry, a document) holds a name or an email."""
    return d.get("name") is not None or d.get("email") is not None


def writer_overlaps(applies: list[tuple], window: float) -> list[tuple]:
    """One writer per user, checked on the applies of one user: [(time, instance, version)].

    The rule: the applies of one user, in time order, fall into runs by one consumer instance
    (one life of one process: a random id each start). A run of instance P, then one of another
    instance, then P again, where P's two runs are less than `window` (the lease TTL) apart, is
    two writers at overlapping times. A correct lease cannot produce it: P applies only while it
    holds the lease, and to hold it again after another process held it, P must wait until that
    process's last renewal has expired, a full TTL after which P's earlier applies were at least
    a fifth of a TTL older still. Hand-overs (a kill, a pause longer than the TTL, SIGTERM) give
    P...Q with no return of P within the window, so they pass, however close P's last and Q's
    first apply are. Returns (first run, middle run, last run) of each overlap, each run as
    (instance, first time, last time, first version, last version)."""
    runs = []
    for t, inst, v in sorted(applies):
        if runs and runs[-1][0] == inst:
            runs[-1][2], runs[-1][4] = t, v
        else:
            runs.append([inst, t, t, v, v])
    out = []
    last_run_of = {}
    for i, r in enumerate(runs):
        j = last_run_of.get(r[0])
        if j is not None and j < i - 1 and r[1] - runs[j][2] < window:
            out.append((tuple(runs[j]), tuple(runs[i - 1]), tuple(r)))
        last_run_of[r[0]] = i
    return out


def check(system: System, ops: list[dict], kills: int = 0, pauses: int = 0,
          drain_timeout: float = 90.0, seed: int | None = None, read_sample: int = 100) -> Report:
    rep = Report()
    fig = rep.figures
    for k in ("ops", "ok", "failed", "unknown", "kills", "pauses", "users", "committed", "events",
              "applied", "superseded", "lost", "lost_api_pg", "lost_outbox_stream",
              "lost_stream_mongo", "lost_stream", "skipped", "double", "out_of_order",
              "two_writers", "orphan", "mismatch", "personal", "phantom", "shown_deleted", "bad_answer",
              "bad_read", "unknown_applied", "dup_stream", "dup_absorbed", "dup_applied",
              "stale_acked"):
        fig[k] = 0
    fig["ops"] = len(ops)
    for o in ops:
        fig[o["status"]] += 1
    fig["kills"], fig["pauses"] = kills, pauses
    for o in ops:
        if o.get("bad"):
            rep.problem("bad_answer", f"{o['kind']} of user {o['uid']}: {o['bad']}")

    # 5. drained: no outbox row waiting, nothing pending or awaiting ack
    d = wait_drained(system, drain_timeout)
    rep.drained_at = d.get("drained_at")
    for k in ("outbox", "pending", "ack_pending", "drain_timeout"):
        if d.get(k, 1 if k == "drain_timeout" else 0):
            rep.problem(k, f"after {drain_timeout}s of draining: {d}")
        else:
            fig[k] = 0

    pg = {r[0]: {"name": r[1], "email": r[2], "version": r[3]}
          for r in system.pg.sql("SELECT id, name, email, version FROM users")}
    committed = {}                                 # event_id -> event as committed
    for eid, uid, etype, v, p in system.pg.sql(
            f"SELECT event_id::text, aggregate_id, event_type, version, payload "
            f"FROM {COMMITTED_TABLE} ORDER BY recorded_at"):
        committed[eid] = {"event_id": eid, "user_id": uid, "version": v, "type": etype,
                          "name": p.get("name"), "email": p.get("email"),
                          "deleted": bool(p.get("deleted"))}
    msgs = read_stream(system.nats_url())
    with system.ferret.client() as c:
        db = c[MONGO_DB]
        docs = {d["_id"]: d for d in db.user_notifications.find()}
        hist = list(db.user_notification_events.find())
    names = system.consumer_instances()

    def who(inst):
        return f"{names.get(inst, 'unknown process')} ({inst})" if inst else "unknown instance"

    # What PostgreSQL committed, per user and version. Versions are the original events; a
    # snapshot repeats the state of a version already committed, and may be the one that applies.
    fig["committed"] = len(committed)
    versions = collections.defaultdict(list)      # (uid, version) -> [committed events]
    cmax = collections.defaultdict(int)            # uid -> last committed version
    deleted_users = set()
    email_owner = {}
    for ev in committed.values():
        key = (ev["user_id"], ev["version"])
        versions[key].append(ev)
        if ev["type"] == SNAPSHOT:
            continue
        cmax[ev["user_id"]] = max(cmax[ev["user_id"]], ev["version"])
        if ev["type"] == "user_deleted":
            deleted_users.add(ev["user_id"])
            if personal(ev):
                rep.problem("personal", f"user {ev['user_id']}: PostgreSQL committed a deletion "
                            f"(event {ev['event_id']}) that carries a name or an email")
        if ev["email"]:
            email_owner.setdefault(ev["email"].lower(), ev["user_id"])
    for (uid, v), evs in versions.items():
        originals = [e["event_id"] for e in evs if e["type"] != SNAPSHOT]
        if len(originals) != 1:
            rep.problem("double" if originals else "phantom",
                        f"user {uid} version {v}: PostgreSQL committed {len(originals)} events "
                        f"for it {sorted(originals)}")

    # The stream: each message an event PostgreSQL committed, with its content and its
    # Nats-Msg-Id; the same event_id twice is a republish outside the duplicate window.
    fig["events"] = len(msgs)
    copies = collections.Counter()
    on_stream = set()
    for m in msgs:
        b = m["body"]
        p = b.get("payload") or {}
        eid = b.get("event_id")
        copies[eid] += 1
        on_stream.add(eid)
        if m["headers"].get("Nats-Msg-Id") != eid:
            rep.problem("mismatch", f"stream seq {m['seq']}: Nats-Msg-Id "
                        f"{m['headers'].get('Nats-Msg-Id')} is not event_id {eid}")
        ev = committed.get(eid)
        if ev is None:
            rep.problem("phantom", f"stream seq {m['seq']}: event {eid} of user {p.get('id')} "
                        f"version {p.get('version')} was never committed")
            continue
        got = (p.get("id"), p.get("version")) + content({**p, "type": b.get("type")})
        want = (ev["user_id"], ev["version"]) + content(ev)
        if b.get("type") == "user_deleted" and personal(p):
            rep.problem("personal", f"stream seq {m['seq']}: deletion {eid} of user {p.get('id')} "
                        f"carries a name or an email")
        if got != want:
            rep.problem("mismatch", f"stream seq {m['seq']}: event {eid} carries {got}, "
                        f"PostgreSQL committed {want}")
    fig["dup_stream"] = sum(n - 1 for n in copies.values())

    # MongoDB's history, entry by entry: committed, same content, applied or superseded.
    applied = collections.defaultdict(list)       # (uid, version) -> [applied entries]
    superseded = collections.defaultdict(list)
    by_user = collections.defaultdict(list)       # uid -> [applied entries]
    reapplies = collections.defaultdict(list)     # uid -> [(time, instance, version)]
    for h in hist:
        uid, v, eid = h.get("user_id"), h.get("version"), h.get("event_id")
        ev = committed.get(eid)
        # A deleted user's entries keep no personal data: their other content is compared.
        gone = uid in deleted_users
        if gone and personal(h):
            rep.problem("personal", f"deleted user {uid} version {v}: history entry of event "
                        f"{eid} still holds a name or an email")
        if ev is None:
            rep.problem("phantom", f"user {uid} version {v}: the history holds event {eid}, "
                        f"which PostgreSQL never committed")
        elif gone and (uid, v) + impersonal(content(h)) != \
                (ev["user_id"], ev["version"]) + impersonal(content(ev)):
            rep.problem("mismatch", f"deleted user {uid} version {v}: history entry of event {eid} "
                        f"is {(uid, v) + impersonal(content(h))}, PostgreSQL committed "
                        f"{(ev['user_id'], ev['version']) + impersonal(content(ev))}")
        elif not gone and (uid, v) + content(h) != (ev["user_id"], ev["version"]) + content(ev):
            rep.problem("mismatch", f"user {uid} version {v}: history entry of event {eid} is "
                        f"{(uid, v) + content(h)}, PostgreSQL committed "
                        f"{(ev['user_id'], ev['version']) + content(ev)}")
        again = int(h.get("reapplied") or 0)
        if h.get("superseded") is True:
            fig["superseded"] += 1
            superseded[(uid, v)].append(h)
            if again:
                rep.problem("out_of_order", f"user {uid} version {v}: event {eid} was recorded "
                            f"as superseded, then took effect {again} time(s), last by "
                            f"{who(h.get('reapplied_by'))} at {h.get('reapplied_at')}")
        else:
            fig["applied"] += 1
            applied[(uid, v)].append(h)
            by_user[uid].append(h)
            if again:
                rep.problem("double", f"user {uid} version {v}: event {eid} took effect "
                            f"{1 + again} times, last by {who(h.get('reapplied_by'))} at "
                            f"{h.get('reapplied_at')} from stream seq {h.get('reapplied_seq')}")
        if again:
            t = applied_time(h.get("reapplied_at"))
            if t is not None:
                reapplies[uid].append((t, h.get("reapplied_by"), v))
            if copies[eid] > 1:
                n = min(again, copies[eid] - 1)
                fig["dup_applied"] += n
                rep.problems.append(f"dup_applied: event {eid} (user {uid} version {v}) is "
                                    f"{copies[eid]} times in the stream and took effect "
                                    f"{1 + again} times")
    fig["dup_absorbed"] = fig["dup_stream"] - fig["dup_applied"]

    def lost(key, text):
        rep.problem("lost", text)
        rep.add(key)

    # 4. each committed version took effect exactly once.
    short = set()                                  # users with a version that never took effect
    for (uid, v), evs in sorted(versions.items()):
        n = len(applied.get((uid, v), ()))
        if n > 1:
            rep.problem("double", f"user {uid} version {v} took effect {n} times: events "
                        f"{[h.get('event_id') for h in applied[(uid, v)]]}")
        if n:
            continue
        short.add(uid)
        eids = {e["event_id"] for e in evs}
        if superseded.get((uid, v)):
            rep.problem("skipped", f"user {uid}: version {v} never took effect: its only history "
                        f"entries are superseded ({[h.get('event_id') for h in superseded[(uid, v)]]})")
        elif eids & on_stream:
            lost("lost_stream_mongo", f"user {uid}: version {v} is on the stream but not in "
                 f"MongoDB's history")
        else:
            lost("lost_outbox_stream", f"user {uid}: version {v} was committed but never reached "
                 f"the stream")

    # The stream still holds every committed event (snapshots too): the relay keeps published
    # rows and publishes again what the stream lost (a purge, a deletion, a store that went back).
    # One that took effect is no loss to the copy, but a replay or a new consumer would miss it.
    # A version that never took effect is counted above, once.
    for eid, ev in committed.items():
        if eid not in on_stream and applied.get((ev["user_id"], ev["version"])):
            lost("lost_stream", f"user {ev['user_id']}: version {ev['version']} (event {eid}, "
                 f"{ev['type']}) took effect, but the stream no longer holds it")

    # In version order, by one writer at a time.
    window = system.lease_ttl()
    for uid, hs in sorted(by_user.items()):
        timed = sorted(((applied_time(h.get("applied_at")), h) for h in hs
                        if applied_time(h.get("applied_at")) is not None),
                       key=lambda th: (th[0], th[1].get("stream_seq") or 0))
        top = None
        for t, h in timed:
            if top is not None and h["version"] < top["version"]:
                rep.problem("out_of_order", f"user {uid}: version {h['version']} applied at "
                            f"{h.get('applied_at')} by {who(h.get('applied_by'))}, after version "
                            f"{top['version']} at {top.get('applied_at')} by "
                            f"{who(top.get('applied_by'))}")
            if top is None or h["version"] > top["version"]:
                top = h
        applies = [(t, h.get("applied_by"), h["version"]) for t, h in timed
                   if h.get("applied_by")] + [a for a in reapplies.get(uid, []) if a[1]]
        for first, mid, last in writer_overlaps(applies, window):
            rep.problem("two_writers", f"user {uid}: {who(first[0])} applied versions "
                        f"{first[3]}..{first[4]}, then {who(mid[0])} versions {mid[3]}..{mid[4]}, "
                        f"then {who(last[0])} again versions {last[3]}..{last[4]}, "
                        f"{last[1] - first[2]:.3f}s after its previous apply (lease TTL {window:g}s)")

    # Requests without an answer (unknown) or with a failure: did they take effect? Every create
    # and update writes an email of its own, so its committed event names it; a delete has one.
    deletes = collections.defaultdict(set)
    for o in ops:
        if o["kind"] == "delete":
            deletes[o["uid"]].add(o["status"])
    for o in ops:
        if o["status"] == "ok":
            continue
        if o["kind"] == "delete":
            # A user's delete event belongs to its one ok delete if it has one, else to an
            # unknown one.
            others = deletes[o["uid"]]
            took = o["uid"] in deleted_users and "ok" not in others and \
                (o["status"] == "unknown" or "unknown" not in others)
        else:
            uid = email_owner.get(o["email"].lower())
            took = uid is not None
            if took and o["uid"] is None:
                o["uid"] = uid
        if took and o["status"] == "unknown":
            fig["unknown_applied"] += 1
        elif took and o["status"] == "failed" and not (o["kind"] == "delete" and o.get("code") == 404):
            rep.problem("phantom", f"{o['kind']} of user {o['uid']} failed "
                        f"({o.get('code') or o.get('error')}) but was written")

    users = set(pg) | set(docs) | set(cmax) | {o["uid"] for o in ops if o["uid"] is not None}
    fig["users"] = len(users)

    # 1. every acknowledged write was committed, as the client sent it.
    for o in ops:
        if o["status"] != "ok":
            continue
        uid, v = o["uid"], o.get("version")
        if o["kind"] == "delete":
            if uid in pg or uid not in deleted_users:
                lost("lost_api_pg", f"user {uid} deleted (204) but PostgreSQL "
                     f"{'still has it' if uid in pg else 'committed no delete event'}")
            continue
        evs = [e for e in versions.get((uid, v), ()) if e["type"] != SNAPSHOT]
        if not evs:
            lost("lost_api_pg", f"{o['kind']} of user {uid} to version {v} answered ok, "
                 f"PostgreSQL committed no such version")
        elif o.get("email") is not None and (evs[0]["name"], evs[0]["email"]) != (o["name"], o["email"]):
            rep.problem("mismatch", f"{o['kind']} of user {uid} version {v} sent "
                        f"{o['name']!r} {o['email']!r}, PostgreSQL committed "
                        f"{evs[0]['name']!r} {evs[0]['email']!r}")

    # 2./3. per user: the final document is what PostgreSQL holds (fields and version), deleted
    # users are a tombstone at their last version, no live copy without its PostgreSQL row.
    live_sample, deleted_sample = [], []
    for uid in sorted(users):
        row, doc = pg.get(uid), docs.get(uid)
        final = cmax.get(uid, 0)
        have = doc and {k: doc.get(k) for k in ("version", "deleted")}
        if row is not None:
            if row["version"] != final:
                rep.problem("mismatch", f"user {uid}: PostgreSQL at version {row['version']}, "
                            f"its committed events end at version {final}")
            if doc is None or doc.get("deleted") or doc.get("version") != row["version"]:
                if doc is not None and (doc.get("version") or 0) > row["version"]:
                    rep.problem("mismatch", f"user {uid}: PostgreSQL at version {row['version']}, "
                                f"MongoDB has {have}")
                elif uid not in short:
                    lost("lost_stream_mongo", f"user {uid}: PostgreSQL at version "
                         f"{row['version']}, MongoDB has {have}")
                continue
            if (doc.get("name"), doc.get("email")) != (row["name"], row["email"]):
                rep.problem("mismatch", f"user {uid} version {row['version']}: PostgreSQL "
                            f"{row['name']!r} {row['email']!r}, MongoDB {doc.get('name')!r} "
                            f"{doc.get('email')!r}")
            live_sample.append(uid)
            continue
        if uid in deleted_users:
            if doc is not None and doc.get("deleted") and personal(doc):
                rep.problem("personal", f"deleted user {uid}: its tombstone still holds a name or "
                            f"an email")
            if doc is None or not doc.get("deleted") or doc.get("version") != final:
                if doc is not None and (doc.get("version") or 0) > final:
                    rep.problem("mismatch", f"deleted user {uid}: last committed version {final}, "
                                f"MongoDB has {have}")
                elif uid not in short:
                    lost("lost_stream_mongo", f"deleted user {uid}: tombstone at version {final} "
                         f"expected, MongoDB has {have}")
                continue
            deleted_sample.append(uid)
            continue
        if doc is not None and not doc.get("deleted"):
            rep.problem("orphan", f"user {uid} is in MongoDB at version {doc.get('version')} but "
                        f"PostgreSQL neither has it nor deleted it")

    # The read API answers what the copy holds (a sample in id order, to stay fast): a user as
    # PostgreSQL has it, a deleted one as 404, and its history as each version once, in order.
    base = system.consumer_url()

    def get(path):
        try:
            return requests.get(base + path, timeout=10)
        except requests.RequestException as e:
            rep.problem("bad_read", f"GET {path}: {e}")
            return None

    for uid in live_sample[:read_sample]:
        r = get(f"/notifications/user/{uid}")
        if r is None:
            continue
        row = pg[uid]
        want = {"user_id": uid, "name": row["name"], "email": row["email"], "version": row["version"]}
        body = r.json() if r.status_code == 200 else None
        got = body and {k: body.get(k) for k in want}
        if got != want:
            rep.problem("bad_read", f"GET /notifications/user/{uid} answered {r.status_code} "
                        f"{got or r.text[:200]}, PostgreSQL has {want}")
    for uid in (live_sample + deleted_sample)[:max(read_sample // 5, 1)]:
        want = [(v, applied[(uid, v)][0].get("event_id")) for v in range(1, cmax[uid] + 1)
                if applied.get((uid, v))]
        r = get(f"/notifications/user/{uid}/events")
        if r is None:
            continue
        body = r.json() if r.status_code == 200 else []
        got = [(e.get("version"), e.get("event_id")) for e in body if isinstance(e, dict)]
        if r.status_code != (200 if want else 404) or got != want or \
                any(e.get("superseded") for e in body if isinstance(e, dict)):
            rep.problem("bad_read", f"GET /notifications/user/{uid}/events answered "
                        f"{r.status_code} with versions {[v for v, _ in got]}, the applied history "
                        f"is {[v for v, _ in want]}")
        if uid in deleted_users and any(personal(e) for e in body if isinstance(e, dict)):
            rep.problem("personal", f"GET /notifications/user/{uid}/events of a deleted user "
                        f"answered a name or an email")
        r = get(f"/notifications/user/{uid}/events?include=superseded")
        if r is None:
            continue
        body = r.json() if r.status_code == 200 else []
        want_all = sorted(h.get("event_id") for h in hist if h.get("user_id") == uid)
        got_all = sorted(e.get("event_id") for e in body if isinstance(e, dict))
        if got_all != want_all:
            rep.problem("bad_read", f"GET /notifications/user/{uid}/events?include=superseded "
                        f"answered {r.status_code} with {len(got_all)} entries, the history has "
                        f"{len(want_all)}")
    for uid in deleted_sample[:40]:
        try:
            r = requests.get(f"{base}/notifications/user/{uid}", timeout=10)
            if r.status_code != 404:
                rep.problem("shown_deleted", f"GET /notifications/user/{uid} answered "
                            f"{r.status_code} for a deleted user")
        except requests.RequestException as e:
            rep.problem("shown_deleted", f"GET /notifications/user/{uid}: {e}")

    # 6. events acknowledged without effect, from the consumers' metrics
    for n in system.services("notification-consumer"):
        try:
            for line in requests.get(n.proc.url + "/metrics", timeout=5).text.splitlines():
                if line.startswith("consumer_events_stale_total"):
                    fig["stale_acked"] += int(float(line.rsplit(" ", 1)[1]))
        except requests.RequestException:
            pass
    if seed is not None:
        fig["seed"] = seed
    return rep
