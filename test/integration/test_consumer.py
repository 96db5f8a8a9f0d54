"""notification-consumer against a real nats-server and FerretDB: events published exactly as the
relay publishes them are applied once in effect, served on the read API, poison goes to the DLQ,
outages and crashes lose nothing, and replay rebuilds the copy."""
import json
import os
import signal
import threading
import time

import pymongo
import pytest
import requests

import harness
from test_consumer_support import *  # noqa: F401,F403
from test_consumer_support import Stream, make_event, start_consumer, expected_doc, poll, \
    assert_problem, TRACEPARENT


@pytest.fixture
def stream(nats):
    s = Stream(nats)
    s.create()
    return s


def test_create_update_delete_are_served_with_versions(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret)
    evs = [make_event("user_created", 1, 1), make_event("user_created", 2, 1),
           make_event("user_updated", 1, 2), make_event("user_created", 3, 1),
           make_event("user_deleted", 3, 2)]
    stream.publish(evs)
    c.wait_events(evs)            # users 1, 2 and 3: each in its lane, in no fixed order

    r = c.get("/notifications/user/1")
    assert r.status_code == 200
    assert r.json() == expected_doc(evs[2][4])
    assert r.headers["ETag"] == '"2"'
    assert c.get("/notifications/user/2").json() == expected_doc(evs[1][4])
    # Deleted: hidden from reads, a tombstone with its version in MongoDB.
    assert_problem(c.get("/notifications/user/3"), 404)
    tomb = c.doc(3)
    assert tomb["deleted"] is True and tomb["version"] == 2
    assert_problem(c.get("/notifications/user/99"), 404)
    assert_problem(c.get("/notifications/user/abc"), 404)

    r = c.get("/notifications")
    assert r.status_code == 200
    assert r.json() == [expected_doc(evs[2][4]), expected_doc(evs[1][4])]
    assert "Link" not in r.headers

    hist = c.get("/notifications/user/1/events").json()
    assert [h["version"] for h in hist] == [1, 2]
    assert [h["event_id"] for h in hist] == [evs[0][3], evs[2][3]]
    assert [h["type"] for h in hist] == ["user_created", "user_updated"]
    for h in hist:
        for k in ("committed_at", "published_at", "applied_at"):
            assert harness_time(h[k]), (k, h)
        assert h["committed_at"] <= h["published_at"] <= h["applied_at"]
    assert_problem(c.get("/notifications/user/42/events"), 404)

    c.wait_metric("consumer_events_applied_total", 5)
    c.wait_metric("consumer_events_stale_total", 0)
    c.wait_metric("consumer_commit_to_apply_seconds_count", 5)
    body = c.ready().json()
    assert body["status"] == "ready" and body["checks"] == {"nats": "ok", "mongodb": "ok",
                                                            "consumer": "ok"}


def harness_time(s):
    import re
    return re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", s) is not None


def test_list_is_paginated_with_link_and_rejects_bad_parameters(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret)
    stream.publish([make_event("user_created", uid, 1) for uid in range(1, 8)])
    for uid in range(1, 8):       # lanes apply users in parallel, not in id order
        c.wait_version(uid, 1)
    r = c.get("/notifications?limit=3")
    assert [d["user_id"] for d in r.json()] == [1, 2, 3]
    assert r.headers["Link"] == '</notifications?after=3&limit=3>; rel="next"'
    r = c.get("/notifications?after=3&limit=3")
    assert [d["user_id"] for d in r.json()] == [4, 5, 6]
    r = c.get("/notifications?after=6&limit=3")
    assert [d["user_id"] for d in r.json()] == [7]
    assert "Link" not in r.headers
    assert len(c.get("/notifications").json()) == 7
    for q in ("limit=0", "limit=1001", "limit=x", "after=-1", "after=abc"):
        body = assert_problem(c.get(f"/notifications?{q}"), 400)
        assert body["field"] == q.split("=")[0]
    assert c.get("/notifications?limit=1000").status_code == 200


def test_min_version_waits_for_the_write_or_answers_504(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret)
    stream.publish([make_event("user_created", 1, 1)])
    c.wait_version(1, 1)
    late = make_event("user_updated", 1, 2)
    t = threading.Timer(0.5, lambda: stream.publish([late]))
    t.start()
    try:
        r = c.get("/notifications/user/1?min_version=2")
    finally:
        t.join()
    assert r.status_code == 200, r.text
    assert r.json() == expected_doc(late[4])

    r = c.get("/notifications/user/1?min_version=5&wait=300ms")
    body = assert_problem(r, 504)
    assert body["version"] == 2 and body["min_version"] == 5
    assert_problem(c.get("/notifications/user/1?min_version=0"), 400)
    assert_problem(c.get("/notifications/user/1?wait=forever"), 400)
    # Written as the description says: min_version a whole number without a sign or spaces, as
    # ids and page parameters are, wait digits first (the settings' parser took " +5" for both).
    for q in ("min_version=%2B1", "min_version=%201", "min_version=1.0", "min_version=",
              "wait=%2B5", "wait=%205", "wait=%205ms", "wait=", "wait=ms"):
        assert assert_problem(c.get(f"/notifications/user/1?{q}"), 400)["field"] == q.split("=")[0], q
    assert c.get("/notifications/user/1?min_version=01&wait=0").status_code == 200
    # A user that does not exist yet also waits, then 504 with version 0.
    assert assert_problem(c.get("/notifications/user/77?min_version=1&wait=200ms"), 504)["version"] == 0


def test_same_event_twice_has_one_effect_and_one_history_entry(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret)
    ev = make_event("user_created", 1, 1)
    stream.publish([ev])
    c.wait_version(1, 1)
    # Republished as after the duplicate window: same event, a new Nats-Msg-Id.
    again = (ev[0], ev[1], dict(ev[2], **{"Nats-Msg-Id": "retry-" + ev[3]}))
    nxt = make_event("user_updated", 1, 2)
    stream.publish([again, nxt])
    c.wait_version(1, 2)
    # The duplicate came before nxt in the stream, so by now it was handled.
    hist = c.history(1)
    assert [h["event_id"] for h in hist] == [ev[3], nxt[3]]
    c.wait_metric("consumer_events_applied_total", 2)
    c.wait_metric("consumer_events_stale_total", 1)


def test_out_of_order_versions_and_late_update_after_delete(nats, ferret, services, stream):
    """Exercises the FerretDB paths of the guarded write: a stale event whose upsert insert
    collides with the _id (11000), a newer one that matches and updates, and one that would skip
    a version and waits for it (test_consumer_order.py has the rest of that)."""
    c = start_consumer(services, nats, ferret)
    v1, v3, v2 = (make_event("user_created", 1, 1), make_event("user_updated", 1, 3),
                  make_event("user_updated", 1, 2))
    d2, late = make_event("user_deleted", 2, 2), make_event("user_updated", 2, 1)
    c2 = make_event("user_created", 2, 1)
    evs = [v1, v3, v2, c2, d2, late, make_event("user_created", 9, 1)]
    stream.publish(evs)
    c.wait_events(evs)            # user 2 at 2 (late is stale), not only users 1 and 9
    assert c.user(1) == expected_doc(v3[4])
    # Every event of the user once, in version order: v3 came before v2 and waited for it.
    hist = c.history(1)
    assert [(h["version"], h["superseded"]) for h in hist] == [(1, False), (2, False), (3, False)]
    assert [h["event_id"] for h in hist] == [v1[3], v2[3], v3[3]]
    assert c.doc(2)["deleted"] is True and c.doc(2)["version"] == 2
    assert_problem(c.get("/notifications/user/2"), 404)
    assert 2 not in [d["user_id"] for d in c.get("/notifications").json()]
    c.wait_metric("consumer_events_stale_total", 1)
    c.wait_metric("consumer_events_applied_total", 6)


def test_guarded_upsert_on_ferretdb_directly(ferret):
    """The two answers the consumer relies on, straight from FerretDB 1.24: the matched update,
    and duplicate key 11000 when the filter's version guard fails and the upsert inserts."""
    with ferret.client() as cl:
        coll = cl.guard_test.users
        r = coll.update_one({"_id": 1, "version": {"$lt": 1}}, {"$set": {"version": 1}}, upsert=True)
        assert r.upserted_id == 1
        r = coll.update_one({"_id": 1, "version": {"$lt": 2}}, {"$set": {"version": 2}}, upsert=True)
        assert r.matched_count == 1 and r.modified_count == 1 and r.upserted_id is None
        with pytest.raises(pymongo.errors.DuplicateKeyError) as e:
            coll.update_one({"_id": 1, "version": {"$lt": 2}}, {"$set": {"version": 2, "x": 1}},
                            upsert=True)
        assert e.value.code == 11000
        assert coll.find_one({"_id": 1}) == {"_id": 1, "version": 2}


def test_poison_goes_to_the_dlq_with_reason_and_the_next_events_flow(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret)
    good1 = make_event("user_created", 1, 1)
    wrong_subject = make_event("user_updated", 1, 2)
    bad_schema = json.loads(make_event("user_updated", 1, 2)[1])
    bad_schema["schema_version"] = 4      # newer than this consumer reads
    unknown = json.loads(make_event("user_updated", 1, 2)[1])
    unknown["type"] = "user_renamed"
    hdr = {"Nats-Msg-Id": "p1", "traceparent": TRACEPARENT, "Content-Type": "application/json"}
    stream.publish([good1])
    stream.publish_raw("user.events.updated", b"{not json", hdr)
    stream.publish_raw("user.events.created", wrong_subject[1], dict(hdr, **{"Nats-Msg-Id": "p2"}))
    stream.publish_raw("user.events.updated", json.dumps(bad_schema).encode(),
                       dict(hdr, **{"Nats-Msg-Id": "p3"}))
    stream.publish_raw("user.events.updated", json.dumps(unknown).encode(),
                       dict(hdr, **{"Nats-Msg-Id": "p4"}))
    good2 = make_event("user_updated", 1, 2)
    stream.publish([good2])
    c.wait_version(1, 2)
    assert c.user(1) == expected_doc(good2[4])

    dlq = poll(lambda: (lambda m: m if len(m) == 4 else None)(stream.messages("USER_EVENTS_DLQ")),
               10, "4 dead letters")
    # Poison has no user: the lanes take it by its sequence (here four lanes) and dead-letter it
    # in no fixed order between them, so the letters are checked in the order of their sequence.
    dlq.sort(key=lambda m: int(m[2]["Dlq-Sequence"]))
    subjects = [m[0] for m in dlq]
    assert subjects == ["dlq.user.events.updated", "dlq.user.events.created",
                        "dlq.user.events.updated", "dlq.user.events.updated"]
    reasons = [m[2]["Dlq-Reason"] for m in dlq]
    assert "not JSON" in reasons[0]
    assert "subject" in reasons[1]
    assert "schema_version" in reasons[2]
    assert "unknown event type" in reasons[3]
    assert dlq[0][1] == b"{not json"
    for i, m in enumerate(dlq):
        h = m[2]
        assert h["traceparent"] == TRACEPARENT
        assert h["Content-Type"] == "application/json"
        assert h["Dlq-Stream"] == "USER_EVENTS"
        assert h["Dlq-Subject"] == ["user.events.updated", "user.events.created",
                                    "user.events.updated", "user.events.updated"][i]
        assert h["Dlq-Sequence"] == str(i + 2)
        assert h["Dlq-Original-Msg-Id"] == f"p{i + 1}"
    c.wait_metric("consumer_events_dead_lettered_total", 4)
    # Terminated, not waiting for redelivery.
    info = poll(lambda: (lambda i: i if i.num_ack_pending == 0 else None)(stream.consumer_info()),
                10, "nothing left unacknowledged")
    assert info.num_redelivered == 0
    assert [h["version"] for h in c.history(1)] == [1, 2]


def test_names_follow_user_apis_rule_of_characters(nats, ferret, services, stream):
    """One definition of a control character with user-api (C0, DEL and C1; common/utf8.h): an
    event whose name or email holds one was not written by user-api and is dead-lettered, C1
    included. Bidirectional formatting and invisible characters, which user-api accepted before it
    refused them, are applied: the copy follows what PostgreSQL holds (docs/events.md)."""
    c = start_consumer(services, nats, ferret)
    c1_name = make_event("user_created", 1, 1, name="a\u0085b")
    c1_email = make_event("user_created", 2, 1, email="a\u009b@example.com")
    bidi = make_event("user_created", 3, 1, name="evil\u202egpj.exe")
    hidden = make_event("user_created", 4, 1, name="ad\u200bmin\ufeff")
    stream.publish([c1_name, c1_email, bidi, hidden])
    c.wait_version(3, 1)
    c.wait_version(4, 1)
    assert c.user(3) == expected_doc(bidi[4])
    assert c.user(4) == expected_doc(hidden[4])
    dlq = poll(lambda: (lambda m: m if len(m) == 2 else None)(stream.messages("USER_EVENTS_DLQ")),
               10, "2 dead letters")
    assert sorted(m[2]["Dlq-Original-Msg-Id"] for m in dlq) == sorted([c1_name[3], c1_email[3]])
    for m in dlq:
        assert "control character" in m[2]["Dlq-Reason"], m[2]
    assert_problem(c.get("/notifications/user/1"), 404)
    assert_problem(c.get("/notifications/user/2"), 404)


def test_bytes_that_are_not_utf8_in_the_url_get_their_4xx_shown_as_escapes(nats, ferret, services,
                                                                            stream):
    """Each answer is the right 4xx, its detail valid UTF-8 (it was not JSON, a 500 in text/plain)
    and a byte that is not UTF-8 shown as \\xHH, never raw, never a '?' the client could have sent."""
    c = start_consumer(services, nats, ferret)
    cases = [
        ("GET", "/notifications/user/%FF", 404, None, 'user "\\xFF" does not exist'),
        ("GET", "/notifications/user/%FF/events", 404, None, 'user "\\xFF" does not exist'),
        ("GET", "/notifications/user/1?min_version=%FF", 400, "min_version", 'min_version "\\xFF"'),
        ("GET", "/notifications/user/1?wait=%C3", 400, "wait", 'wait "\\xC3"'),
        ("GET", "/notifications/user/1/events?include=%FF", 400, "include", 'include "\\xFF"'),
        ("GET", "/notifications?limit=%FF", 400, "limit", 'limit "\\xFF"'),
        ("GET", "/notifications?after=%C3", 400, "after", 'after "\\xC3"'),
        ("POST", "/notifications/user/%FF", 405, None, "/notifications/user/\\xFF"),
        ("GET", "/notifications/%FF", 404, None, ""),
        ("GET", "/notifications/user/x" + "%C3%A9" * 30, 404, None,
         'user "x' + "é" * 19 + '" does not exist'),
    ]
    for method, path, status, field, shown in cases:
        problem = assert_problem(requests.request(method, c.base + path, timeout=10), status)
        assert problem.get("field") == field, (path, problem)
        assert shown in problem["detail"], (path, problem)


def test_stream_missing_at_start_is_not_ready_then_consumes(nats, ferret, services):
    s = Stream(nats)
    c = start_consumer(services, nats, ferret, wait_ready=False)
    # (r,): a 503 response is falsy itself.
    r, = poll(lambda: (lambda r: (r,) if "not found" in r.text else None)(c.ready()), 10,
              "readyz naming the missing stream")
    assert r.status_code == 503
    assert r.json()["checks"]["consumer"] == "stream USER_EVENTS not found"
    assert "USER_EVENTS" not in s.stream_names()  # it did not create it
    s.create()
    s.publish([make_event("user_created", 5, 1)])
    c.wait_version(5, 1, timeout=30)
    poll(lambda: c.ready().status_code == 200, 10, "ready")
    info = s.consumer_info()
    assert getattr(info.config.deliver_policy, "value", info.config.deliver_policy) == "all"
    assert getattr(info.config.ack_policy, "value", info.config.ack_policy) == "explicit"
    assert info.config.max_deliver in (-1, None)
    assert info.config.max_ack_pending == 1000


def test_restart_reuses_the_durable_and_sigterm_exits_zero(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret)
    stream.publish([make_event("user_created", 1, 1)])
    c.wait_version(1, 1)
    created = stream.consumer_info().created
    assert c.service.stop(timeout=10) == 0
    # Published while it was down: picked up after the restart, nothing skipped.
    down = [make_event("user_updated", 1, 2), make_event("user_created", 2, 1)]
    stream.publish(down)
    c2 = start_consumer(services, nats, ferret, dbname=c.dbname)
    c2.wait_events(down)          # user 2 applied says nothing of user 1 (another lane)
    assert c2.user(1)["version"] == 2
    assert stream.consumer_info().created == created


@pytest.mark.parametrize("point", ["consumer.after_write_before_ack",
                                   "consumer.between_upsert_and_history"])
def test_killed_between_write_and_ack_has_one_effect(nats, ferret, services, stream, point):
    c = start_consumer(services, nats, ferret, FAILPOINTS=f"{point}=crash@2",
                       CONSUMER_ACK_WAIT="2s")
    evs = [make_event("user_created", 1, 1), make_event("user_updated", 1, 2),
           make_event("user_updated", 1, 3)]
    stream.publish(evs[:2])
    assert c.service.proc.wait(15) == -signal.SIGKILL
    assert c.doc(1)["version"] == 2  # written, not acknowledged
    # v3 is new, so it is delivered at once after the restart; v2 only when its ack wait ends:
    # the copy is past v2 by then, yet v2 took effect and must be in the history exactly once.
    stream.publish(evs[2:])
    c2 = start_consumer(services, nats, ferret, dbname=c.dbname)
    c2.wait_version(1, 3)
    poll(lambda: stream.consumer_info().num_ack_pending == 0, 15, "v2 redelivered and acknowledged")
    # Three events, four deliveries: v2 came again.
    assert stream.consumer_info().delivered.consumer_seq >= 4
    hist = c.history(1)
    assert [h["event_id"] for h in hist] == [e[3] for e in evs]
    assert [h["version"] for h in hist] == [1, 2, 3]
    assert c2.user(1) == expected_doc(evs[2][4])
    c2.wait_metric("consumer_events_applied_total", 1)  # v3; v2 was found already applied
    c2.wait_metric("consumer_events_stale_total", 1)


def test_cli_help_version_check():
    r = harness.run_binary("notification-consumer", "--help")
    assert r.returncode == 0
    for name in ("NATS_URL", "MONGODB_URI", "NOTIFICATION_CONSUMER_PORT", "CONSUMER_BATCH",
                 "replay"):
        assert name in r.stdout
    r = harness.run_binary("notification-consumer", "--version")
    assert r.returncode == 0 and r.stdout.startswith("notification-consumer ")
    r = harness.run_binary("notification-consumer", "--check")
    assert r.returncode == 0 and "MONGODB_DB=notifications_db" in r.stdout
    r = harness.run_binary("notification-consumer", "--check", env={"CONSUMER_BATCH": "0"})
    assert r.returncode == 2 and "CONSUMER_BATCH" in r.stderr
    r = harness.run_binary("notification-consumer", "bogus")
    assert r.returncode == 2
    r = harness.run_binary("notification-consumer", "replay", "--from-seq", "x")
    assert r.returncode == 2
    r = harness.run_binary("notification-consumer", "replay", "--from-time", "2999-01-01T00:00:00Z")
    assert r.returncode == 2 and "--from-time" in r.stderr


def test_a_bad_mongodb_uri_is_named_without_its_password():
    uri = "mongodb://alice:s3cret-pw@127.0.0.1:1/?replicaSet="
    r = harness.run_binary("notification-consumer", env={"MONGODB_URI": uri,
                                                         "NATS_URL": "nats://127.0.0.1:1"}, timeout=20)
    assert r.returncode != 0
    assert "invalid MONGODB_URI" in r.stderr and "alice:********@" in r.stderr, r.stderr
    assert "s3cret-pw" not in r.stdout + r.stderr
    r = harness.run_binary("notification-consumer", "--check", env={"MONGODB_URI": uri})
    assert "s3cret-pw" not in r.stdout + r.stderr


def test_a_killed_consumer_leaves_no_driver_segment_behind(nats, ferret, services, stream):
    """The MongoDB driver keeps its counters in /dev/shm/mongoc-<pid>, which only a clean exit
    removes. One left by a kill makes the next process with that pid, even `replay --help`, print
    the driver's "Falling back to malloc for counters." on stderr before main() runs. The consumer
    removes the name when it starts, so a kill leaves nothing behind."""
    c = start_consumer(services, nats, ferret)
    segment = f"/dev/shm/mongoc-{c.service.pid}"
    assert not os.path.exists(segment)
    c.service.kill()
    assert not os.path.exists(segment)


class Writer(threading.Thread):
    """Publishes updates round-robin over users 1..n until stopped; remembers the last payload of
    each user and how many events it published."""

    def __init__(self, stream, users=10, pause=0.02):
        super().__init__(daemon=True)
        self.stream, self.users, self.pause = stream, users, pause
        self.last = {}
        self.count = 0
        self.halt = threading.Event()
        self.error = None

    def run(self):
        version = {}
        try:
            while not self.halt.is_set():
                batch = []
                for uid in range(1, self.users + 1):
                    version[uid] = version.get(uid, 0) + 1
                    kind = "user_created" if version[uid] == 1 else "user_updated"
                    ev = make_event(kind, uid, version[uid])
                    batch.append(ev)
                    self.last[uid] = ev[4]
                self.stream.publish(batch)
                self.count += len(batch)
                time.sleep(self.pause)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def stop(self):
        self.halt.set()
        self.join(10)
        assert self.error is None, self.error


def test_ferretdb_down_for_20s_under_load_loses_and_burns_nothing(nats, ferret, services, stream):
    # The ack wait only keeps a slow recovery on a busy machine from causing redeliveries, which
    # the last assertion would count.
    c = start_consumer(services, nats, ferret, CONSUMER_ACK_WAIT="60s")
    # About 25 events a second: FerretDB on SQLite applies a few hundred at most.
    w = Writer(stream, users=5, pause=0.2)
    w.start()
    try:
        poll(lambda: w.count >= 50 and c.metric("consumer_events_applied_total") > 0, 20,
             "writes flowing")
        ferret.kill()
        r, = poll(lambda: (lambda r: (r,) if r.status_code == 503 else None)(c.ready()), 15,
                  "readyz reporting MongoDB down")
        assert r.json()["checks"]["mongodb"] != "ok"
        assert r.json()["checks"]["nats"] == "ok"
        time.sleep(20)
        assert c.service.running()
        ferret.start()
        time.sleep(2)
    finally:
        w.stop()
    poll(lambda: c.ready().status_code == 200, 30, "ready again")
    for uid, payload in w.last.items():
        c.wait_version(uid, payload["version"], timeout=60)
        assert c.user(uid) == expected_doc(payload)
    # Every event took effect exactly once, none was dead-lettered, and none was delivered twice.
    assert len(c.history()) == w.count
    assert stream.messages("USER_EVENTS_DLQ") == []
    info = poll(lambda: (lambda i: i if i.num_ack_pending == 0 else None)(stream.consumer_info()),
                15, "all acknowledged")
    assert info.delivered.consumer_seq == w.count
    c.wait_metric("consumer_events_dead_lettered_total", 0)


def replay(c, nats, ferret, *args):
    env = {"NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "MONGODB_DB": c.dbname}
    return harness.run_binary("notification-consumer", "replay", *args, env=env, timeout=120)


def counts_line(out):
    import re
    m = re.search(r"replay done: read (\d+), applied (\d+), stale (\d+), dead-lettered (\d+) in "
                  r"[0-9.]+s", out)
    assert m, out
    return tuple(int(x) for x in m.groups())


def state(c):
    """The copy as (documents without applied_at and applied_by, which name the moment and the
    process of the apply, history event ids per user)."""
    docs = {k: {f: v for f, v in d.items() if f not in ("applied_at", "applied_by")}
            for k, d in c.docs().items()}
    hist = {}
    for h in c.history():
        hist.setdefault(h["user_id"], []).append(h["event_id"])
    return docs, hist


def test_replay_after_the_collections_were_dropped_rebuilds_the_copy(nats, ferret, services,
                                                                      stream):
    c = start_consumer(services, nats, ferret)
    evs = [make_event("user_created", 1, 1), make_event("user_created", 2, 1),
           make_event("user_updated", 1, 2), make_event("user_deleted", 2, 2),
           make_event("user_created", 3, 1), make_event("user_updated", 1, 3)]
    stream.publish(evs[:3])
    stream.publish_raw("user.events.updated", b"garbage", {"Nats-Msg-Id": "bad"})
    stream.publish(evs[3:] + [evs[2]])  # the last one: a duplicate under its own id, dropped
    c.wait_events(evs)            # the snapshot holds user 2's tombstone too
    docs_before, hist_before = state(c)
    assert c.service.stop() == 0

    c.drop()
    r = replay(c, nats, ferret)
    assert r.returncode == 0, r.stderr
    assert counts_line(r.stderr) == (7, 6, 0, 1)
    docs_after, hist_after = state(c)
    assert {k: {f: v for f, v in d.items() if f not in ("published_at",)} for k, d in docs_after.items()} \
        == {k: {f: v for f, v in d.items() if f not in ("published_at",)} for k, d in docs_before.items()}
    assert hist_after == hist_before
    assert hist_after[1] == [evs[0][3], evs[2][3], evs[5][3]]

    # Again over a complete copy: everything is stale, nothing changes.
    r = replay(c, nats, ferret)
    assert counts_line(r.stderr) == (7, 0, 6, 1)
    assert state(c)[1] == hist_before

    # From a sequence: only what follows it.
    c.drop()
    r = replay(c, nats, ferret, "--from-seq", "5")
    assert r.returncode == 0, r.stderr
    assert counts_line(r.stderr) == (3, 3, 0, 0)
    assert sorted(c.docs()) == [1, 2, 3]
    assert c.doc(1)["version"] == 3 and c.doc(2)["deleted"] is True

    # From a time after the last event: nothing to do.
    c.drop()
    r = replay(c, nats, ferret, "--from-time", "2200-01-01T00:00:00Z")
    assert r.returncode == 0, r.stderr
    assert counts_line(r.stderr) == (0, 0, 0, 0)
    assert c.docs() == {}
    # The ephemeral consumers are gone; the durable one is untouched.
    assert stream.consumer_info().num_ack_pending == 0


def test_replay_fresh_while_the_live_consumer_runs_and_writes_continue(nats, ferret, services,
                                                                        stream):
    c = start_consumer(services, nats, ferret)
    w = Writer(stream, users=5, pause=0.2)
    w.start()
    try:
        poll(lambda: w.count >= 100, 20, "a backlog of writes")
        r = replay(c, nats, ferret, "--fresh")
        assert r.returncode == 0, r.stderr
        read, applied, stale, dead = counts_line(r.stderr)
        assert read >= 100 and dead == 0
        assert "fresh collection merged into the live one" in r.stderr
        time.sleep(1)
    finally:
        w.stop()
    for uid, payload in w.last.items():
        c.wait_version(uid, payload["version"], timeout=60)
        assert c.user(uid) == expected_doc(payload)
    # Every event in the history exactly once.
    hist = c.history()
    assert len(hist) == w.count
    assert len({h["event_id"] for h in hist}) == w.count
    with ferret.client() as cl:
        names = cl[c.dbname].list_collection_names()
    assert sorted(names) == ["user_notification_events", "user_notifications"]


def test_replay_fresh_never_shows_readers_an_empty_or_partial_copy(nats, ferret, services,
                                                                    stream):
    """--fresh rebuilds the copy aside and merges it in: a user planted in the copy without an
    event goes, a document taken off its event is put right, and meanwhile every read finds
    every user of the stream (a drop then a rename would leave the copy empty in between)."""
    c = start_consumer(services, nats, ferret)
    users = 300
    created = [make_event("user_created", uid, 1) for uid in range(1, users + 1)]
    stream.publish(created)
    last = make_event("user_updated", 7, 2)
    stream.publish([last])
    c.wait_events(created + [last])   # every user: the reader below counts them all
    with ferret.client() as cl:
        coll = cl[c.dbname].user_notifications
        coll.insert_one({"_id": 99999, "user_id": 99999, "name": "planted", "email": "p@x",
                         "version": 1, "deleted": False, "stream_seq": 1})
        coll.update_one({"_id": 7}, {"$set": {"name": "tampered"}})

    seen, stop = [], threading.Event()

    def reader():
        with ferret.client() as rc:
            coll = rc[c.dbname].user_notifications
            while not stop.is_set():
                seen.append(coll.count_documents({"_id": {"$lte": users}}))

    t = threading.Thread(target=reader)
    t.start()
    try:
        r = replay(c, nats, ferret, "--fresh")
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    assert "fresh collection merged into the live one" in r.stderr
    assert len(seen) >= 3, "the reader did not read during the replay"
    assert set(seen) == {users}, f"a read found {min(seen)} of {users} users"
    assert c.doc(99999) is None
    assert c.user(7) == expected_doc(last[4])
    assert len(c.docs()) == users
    with ferret.client() as cl:
        assert sorted(cl[c.dbname].list_collection_names()) == \
            ["user_notification_events", "user_notifications"]


def test_a_user_taken_back_by_another_writer_is_applied_again(nats, ferret, services, stream):
    """FerretDB's update reads then writes, so a second writer (a replay) can put a document back
    to an older version just after the consumer wrote a newer one. A replay announces itself on
    consumer.lease.<durable>.writer; the consumer reads the writes it made before the end of
    that announcement back a while later (CONSUMER_RECHECK_AFTER) and applies them again."""
    c = start_consumer(services, nats, ferret, CONSUMER_RECHECK_AFTER="3s")
    v1, v2 = make_event("user_created", 1, 1), make_event("user_updated", 1, 2)
    until_us = int((time.time() + 60) * 1e6)
    stream.publish_raw("consumer.lease.notification-consumer.writer",
                       json.dumps({"until_us": until_us}).encode())
    stream.publish([v1, v2])
    c.wait_version(1, 2)
    with ferret.client() as cl:
        cl[c.dbname].user_notifications.update_one(
            {"_id": 1}, {"$set": {"version": 1, "name": v1[4]["name"], "email": v1[4]["email"]}})
    assert c.doc(1)["version"] == 1
    c.wait_version(1, 2, timeout=15)
    assert c.user(1) == expected_doc(v2[4])
    c.wait_metric("consumer_regressions_repaired_total", 1)
    assert [h["version"] for h in c.history(1)] == [1, 2]


def test_nats_restart_is_survived_and_reads_keep_working(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret)
    stream.publish([make_event("user_created", 1, 1)])
    c.wait_version(1, 1)
    nats.stop()
    r, = poll(lambda: (lambda r: (r,) if r.status_code == 503 else None)(c.ready()), 10,
              "readyz reporting NATS down")
    assert r.json()["checks"]["nats"] == "not connected"
    assert c.get("/notifications/user/1").status_code == 200
    nats.start()
    ev = make_event("user_updated", 1, 2)
    poll(lambda: stream.publish([ev]), 15, "publishing again")
    c.wait_version(1, 2, timeout=30)
    assert c.user(1) == expected_doc(ev[4])
    poll(lambda: c.ready().status_code == 200, 15, "ready again")


def test_durable_deleted_under_the_consumer_is_set_up_again(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret)
    stream.publish([make_event("user_created", 1, 1)])
    c.wait_version(1, 1)
    stream.delete_consumer()
    ev = make_event("user_updated", 1, 2)
    stream.publish([ev])
    c.wait_version(1, 2, timeout=20)
    assert c.user(1) == expected_doc(ev[4])
    info = stream.consumer_info()
    assert getattr(info.config.deliver_policy, "value", info.config.deliver_policy) == "all"
    # Recreated from the first event: the old one came again and was stale.
    poll(lambda: c.metric("consumer_events_stale_total") == 1, 10, "the replayed v1 found stale")


def test_mongodb_down_at_start_is_not_ready_then_catches_up(nats, ferret, services, stream):
    ferret.stop()
    stream.publish([make_event("user_created", 1, 1), make_event("user_updated", 1, 2)])
    c = start_consumer(services, nats, ferret, wait_ready=False)
    r, = poll(lambda: (lambda r: (r,) if r.json()["checks"]["mongodb"] not in ("ok", "not checked yet")
                       else None)(c.ready()), 15, "readyz naming MongoDB")
    assert r.status_code == 503
    assert c.service.running()
    # Nothing was fetched meanwhile: no delivery spent.
    assert stream.consumer_info().delivered.consumer_seq == 0
    r = c.get("/notifications/user/1")
    assert_problem(r, 503)
    assert r.headers["Retry-After"] == "1"
    ferret.start()
    c.wait_version(1, 2, timeout=30)
    poll(lambda: c.ready().status_code == 200, 15, "ready")
    assert stream.consumer_info().delivered.consumer_seq == 2


def lease_role(c):
    """The consumer check of /readyz: "ok" for the process holding the lease, "standby: ..."
    for one waiting for it."""
    return c.ready().json()["checks"]["consumer"]


def test_two_processes_one_applies_the_other_stands_by_and_takes_over(nats, ferret, services,
                                                                      stream):
    # A short ack wait: what the killed process held comes back soon, after newer events.
    a = start_consumer(services, nats, ferret, CONSUMER_LEASE_TTL="2s", CONSUMER_ACK_WAIT="3s")
    poll(lambda: lease_role(a) == "ok", 15, "the first process to hold the lease")
    b = start_consumer(services, nats, ferret, dbname=a.dbname, CONSUMER_LEASE_TTL="2s")
    poll(lambda: lease_role(b).startswith("standby: lease held by "), 15,
         "the second process to stand by")
    assert lease_role(a) == "ok"
    w = Writer(stream, users=3, pause=0.05)
    w.start()
    try:
        poll(lambda: w.count >= 60, 20, "writes flowing")
        a.service.kill()  # b takes over within the lease's TTL
        poll(lambda: lease_role(b) == "ok", 15, "the stand-by applying")
        time.sleep(1)
    finally:
        w.stop()
    for uid, payload in w.last.items():
        b.wait_version(uid, payload["version"], timeout=60)
        assert b.user(uid) == expected_doc(payload)
    poll(lambda: stream.consumer_info().num_ack_pending == 0, 20, "all acknowledged")
    # Every event once in the history, every version of every user (those the killed process
    # held came back after newer ones, which waited for them).
    hist = b.history()
    assert len(hist) == w.count and len({h["event_id"] for h in hist}) == w.count
    for uid, payload in w.last.items():
        assert sorted(h["version"] for h in hist if h["user_id"] == uid) == \
            list(range(1, payload["version"] + 1))
    assert " applied " not in b.log().split("lease: applying")[0]  # nothing before it led

    # A stopped leader hands over at once; a restarted one stands by.
    c = start_consumer(services, nats, ferret, dbname=a.dbname, CONSUMER_LEASE_TTL="60s")
    poll(lambda: lease_role(c).startswith("standby"), 15, "the restarted process to stand by")
    assert b.service.stop() == 0
    poll(lambda: lease_role(c) == "ok", 5, "the hand-over")
    stream.publish([make_event("user_updated", 1, w.last[1]["version"] + 1)])
    c.wait_version(1, w.last[1]["version"] + 1)


def test_two_processes_on_the_same_host_and_port_are_two_owners(nats, ferret, services, stream):
    """Two machines may share a hostname and a port: here two processes on one port of two
    loopback addresses. The lease's owner is each process's own life, so one applies and the
    other stands by, also after several renewals."""
    port = harness.free_port()
    a = start_consumer(services, nats, ferret, CONSUMER_LEASE_TTL="1s",
                       NOTIFICATION_CONSUMER_BIND="127.0.0.1", NOTIFICATION_CONSUMER_PORT=port)
    poll(lambda: lease_role(a) == "ok", 15, "the first process to hold the lease")
    start_consumer(services, nats, ferret, dbname=a.dbname, wait_ready=False,
                   CONSUMER_LEASE_TTL="1s", NOTIFICATION_CONSUMER_BIND="127.0.0.2",
                   NOTIFICATION_CONSUMER_PORT=port)

    def role_b():
        return requests.get(f"http://127.0.0.2:{port}/readyz",
                            timeout=2).json()["checks"]["consumer"]

    poll(lambda: role_b().startswith("standby: lease held by "), 15, "the second to stand by")
    held_by = role_b().removeprefix("standby: lease held by ")
    assert f":{port}/" in held_by, held_by
    time.sleep(3)                 # three TTLs of renewals: still one holder
    assert lease_role(a) == "ok"
    assert role_b() == f"standby: lease held by {held_by}"
    stream.publish([make_event("user_created", 1, 1)])
    a.wait_version(1, 1)

def lane_of(uid, lanes=4):
    """The consumer's lane of a user (applier.c, lane_of())."""
    return ((uid * 0x9e3779b97f4a7c15) % 2**64 >> 32) % lanes


def test_a_user_whose_writes_fail_holds_up_only_its_lane(nats, ferret, services, stream):
    """MongoDB answers but refuses every write of user 1 (the failpoint
    consumer.refuse_user_1): user 1's lane retries it and waits, the other lanes go on, and the
    process stays ready. A process without the failure applies user 1 and the users behind it."""
    c = start_consumer(services, nats, ferret, CONSUMER_LANES=4,
                       FAILPOINTS="consumer.refuse_user_1=on")
    users = range(1, 41)
    stream.publish([make_event("user_created", uid, 1) for uid in users])
    others = [u for u in users if lane_of(u) != lane_of(1)]
    assert len(others) >= 20
    for uid in others:
        c.wait_version(uid, 1)
    stream.publish([make_event("user_updated", uid, 2) for uid in others])
    for uid in others:
        c.wait_version(uid, 2)
    assert c.doc(1) is None
    poll(lambda: c.metric("consumer_apply_errors_total") >= 2, 10, "user 1's write retried")
    r = c.ready()
    assert r.status_code == 200 and r.json()["checks"]["mongodb"] == "ok", r.text
    assert "failpoint consumer.refuse_user_1; retrying it, lane" in c.log()

    assert c.service.stop() == 0
    c2 = start_consumer(services, nats, ferret, dbname=c.dbname, CONSUMER_LANES=4)
    for uid in users:
        c2.wait_version(uid, 2 if uid in others else 1)
    assert [h["version"] for h in c2.history(1)] == [1]
