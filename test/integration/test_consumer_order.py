"""notification-consumer applies each user's versions in order, against a real nats-server and
FerretDB. Events are published straight to USER_EVENTS in the wrong order, as the stream holds
them after a consumer crash (what the dead process held comes back after the ack wait, behind
newer events) or after a relay batch that failed half-way was republished (v4 before v3). An
event that would skip a version is held back (negatively acknowledged with a delay) until the
version before it took effect; a gap that never fills is applied after CONSUMER_GAP_WAIT and
reported; a snapshot rebases at once; a duplicate stays a no-op."""
import re
import signal
import time
import uuid

import pytest

import harness
from test_consumer_support import *  # noqa: F401,F403
from test_consumer_support import Stream, make_event, start_consumer, expected_doc, poll


@pytest.fixture
def stream(nats):
    s = Stream(nats)
    s.create()
    return s


def applied_in_order(c, uid):
    """The user's history as [(version, superseded)], each entry's applied_at rising with its
    version (an earlier version applied later would be out of order)."""
    hist = c.history(uid)
    times = [h["applied_at"] for h in hist]
    assert times == sorted(times), [(h["version"], h["applied_at"]) for h in hist]
    return [(h["version"], h["superseded"]) for h in hist]


def held_lines(c, uid):
    """The versions of user uid that the log says were held back."""
    return [int(m.group(1)) for m in
            re.finditer(r"held back \S+ user=%d version=(\d+) " % uid, c.log())]


def gap_warnings(c):
    return [line for line in c.log().splitlines() if "version gap: " in line]


def test_an_event_that_would_skip_a_version_waits_for_it(nats, ferret, services, stream):
    """v1, v3, then v2 a moment later: v3 waits, the events of other users behind it flow, and
    once v2 arrives v2 then v3 take effect. Nothing superseded, no gap."""
    c = start_consumer(services, nats, ferret, CONSUMER_ACK_WAIT="5s", CONSUMER_GAP_WAIT="60s")
    v1, v3, v2 = (make_event("user_created", 1, 1), make_event("user_updated", 1, 3),
                  make_event("user_updated", 1, 2))
    other = make_event("user_created", 2, 1)
    stream.publish([v1, v3, other])
    # v3 is held back, and it does not block the other user (in its lane or another).
    c.wait_version(2, 1)
    poll(lambda: held_lines(c, 1) == [3], 10, "v3 held back")
    assert c.doc(1)["version"] == 1, "v3 took effect before v2"

    stream.publish([v2])
    c.wait_version(1, 3)
    assert c.user(1) == expected_doc(v3[4])
    assert applied_in_order(c, 1) == [(1, False), (2, False), (3, False)]
    assert [h["event_id"] for h in c.history(1)] == [v1[3], v2[3], v3[3]]
    c.wait_metric("consumer_events_applied_total", 4)
    assert c.metric("consumer_events_stale_total") == 0
    assert c.metric("consumer_version_gaps_total") == 0
    assert c.metric("consumer_events_held_back_total") >= 1
    assert set(held_lines(c, 1)) == {3}
    assert gap_warnings(c) == []
    poll(lambda: stream.consumer_info().num_ack_pending == 0, 10, "everything acknowledged")


def test_a_gap_that_never_fills_is_applied_after_the_gap_wait(nats, ferret, services, stream):
    """v2 never comes (dead-lettered, purged): v3 waits CONSUMER_GAP_WAIT, then takes effect over
    the gap, counted once and named in one warning."""
    c = start_consumer(services, nats, ferret, CONSUMER_ACK_WAIT="1s", CONSUMER_GAP_WAIT="3s")
    v1, v3 = make_event("user_created", 1, 1), make_event("user_updated", 1, 3)
    stream.publish([v1, v3, make_event("user_created", 2, 1)])
    c.wait_version(2, 1)
    # User 2 is in another lane: user 1 may have no document yet.
    poll(lambda: c.doc(1), 10, "user 1's document")
    assert c.doc(1)["version"] == 1, "v3 took effect at once"
    poll(lambda: held_lines(c, 1) == [3] and c.metric("consumer_events_held_back_total") >= 2,
         10, "v3 held back, then again")
    assert c.doc(1)["version"] == 1, "v3 took effect before the gap wait"

    c.wait_version(1, 3, timeout=15)
    assert c.user(1) == expected_doc(v3[4])
    entry = c.history(1)[-1]
    waited = (harness_us(entry["applied_at"]) - harness_us(entry["published_at"])) / 1e6
    assert waited >= 3.0, f"applied {waited:.2f}s after it was published, before the gap wait"
    assert applied_in_order(c, 1) == [(1, False), (3, False)]
    c.wait_metric("consumer_version_gaps_total", 1)
    warnings = gap_warnings(c)
    assert len(warnings) == 1, warnings
    assert "user=1 version=3 applied over the copy's version 1 " in warnings[0], warnings[0]
    assert v3[3] in warnings[0]

    # The user is not stuck: the next version follows at once.
    v4 = make_event("user_updated", 1, 4)
    stream.publish([v4])
    c.wait_version(1, 4, timeout=5)
    assert c.metric("consumer_version_gaps_total") == 1
    assert 4 not in held_lines(c, 1)


def test_an_event_already_older_than_the_gap_wait_still_waits(nats, ferret, services, stream):
    """The wait counts from when the consumer first held the event back, not from the stream's
    timestamp: a consumer that lags (here: started after the events were published) finds them
    all older than CONSUMER_GAP_WAIT, and must not apply an early one at once for that."""
    v1, v3, v2 = (make_event("user_created", 1, 1), make_event("user_updated", 1, 3),
                  make_event("user_updated", 1, 2))
    stream.publish([v1, v3, make_event("user_created", 2, 1)])
    time.sleep(4)                 # longer than the gap wait below
    c = start_consumer(services, nats, ferret, CONSUMER_ACK_WAIT="1s", CONSUMER_GAP_WAIT="3s")
    c.wait_version(2, 1)
    # User 2 is in another lane: user 1's v1 and v3 may not have come yet. v3 is held back
    # after v1 took effect (a lane takes a user's events in stream order).
    poll(lambda: held_lines(c, 1) == [3], 10, "v3 held back")
    assert c.doc(1)["version"] == 1, "v3 took effect at once"
    stream.publish([v2])
    c.wait_version(1, 3)
    assert applied_in_order(c, 1) == [(1, False), (2, False), (3, False)]
    assert c.metric("consumer_version_gaps_total") == 0
    assert gap_warnings(c) == []


def test_a_crashed_process_s_event_comes_back_behind_newer_ones(nats, ferret, services, stream):
    """The consumer dies with v2 in hand, not applied; restarted, it takes the lease once the dead
    process's lapses and fetches v3, while v2 comes back only after the ack wait. v3 waits for
    it."""
    c = start_consumer(services, nats, ferret, CONSUMER_ACK_WAIT="12s", CONSUMER_GAP_WAIT="30s",
                       CONSUMER_LEASE_TTL="2s",
                       FAILPOINTS="consumer.after_fetch_before_apply=crash@2")
    v1, v2, v3 = (make_event("user_created", 1, 1), make_event("user_updated", 1, 2),
                  make_event("user_updated", 1, 3))
    stream.publish([v1, v2])
    assert c.service.proc.wait(15) == -signal.SIGKILL
    assert c.doc(1)["version"] == 1
    stream.publish([v3, make_event("user_created", 2, 1)])
    # The same host:port, another life: it stands by until the dead process's lease lapses.
    c2 = start_consumer(services, nats, ferret, dbname=c.dbname, CONSUMER_ACK_WAIT="12s",
                        CONSUMER_GAP_WAIT="30s", CONSUMER_LEASE_TTL="2s",
                        NOTIFICATION_CONSUMER_PORT=c.service.port)
    c2.wait_version(2, 1)         # behind v3, long before v2's ack wait ends
    # User 2 is in another lane: v3 may come a moment later.
    poll(lambda: held_lines(c2, 1) == [3], 10, "v3 held back")
    assert c2.doc(1)["version"] == 1, "v3 took effect before v2 came back"
    c2.wait_version(1, 3, timeout=30)
    assert applied_in_order(c2, 1) == [(1, False), (2, False), (3, False)]
    assert c2.user(1) == expected_doc(v3[4])
    assert c2.metric("consumer_version_gaps_total") == 0
    assert c2.metric("consumer_events_stale_total") == 0


def test_a_snapshot_rebases_at_once_and_later_versions_keep_their_order(nats, ferret, services,
                                                                        stream):
    """A user_snapshot carries the full state at its version: it applies over any gap without
    waiting (also for a user without a document), and the events after it are ordered from
    there: v7 before v6 waits for v6."""
    c = start_consumer(services, nats, ferret, CONSUMER_ACK_WAIT="5s", CONSUMER_GAP_WAIT="60s")
    v1, snap5 = make_event("user_created", 1, 1), make_event("user_snapshot", 1, 5)
    snap_new = make_event("user_snapshot", 2, 3)
    stream.publish([v1, snap5, snap_new])
    c.wait_version(1, 5, timeout=5)
    c.wait_version(2, 3, timeout=5)
    assert c.user(1) == expected_doc(snap5[4])
    assert held_lines(c, 1) == [] and held_lines(c, 2) == []

    v7, v6 = make_event("user_updated", 1, 7), make_event("user_updated", 1, 6)
    stream.publish([v7, make_event("user_created", 3, 1)])
    c.wait_version(3, 1)
    # User 3 is in another lane: v7 may come a moment later.
    poll(lambda: held_lines(c, 1) == [7], 10, "v7 held back")
    assert c.doc(1)["version"] == 5, "v7 took effect before v6"
    stream.publish([v6])
    c.wait_version(1, 7)
    assert applied_in_order(c, 1) == [(1, False), (5, False), (6, False), (7, False)]
    assert [h["type"] for h in c.history(1)] == ["user_created", "user_snapshot", "user_updated",
                                                  "user_updated"]
    assert applied_in_order(c, 2) == [(3, False)]
    assert c.metric("consumer_version_gaps_total") == 0


def test_a_duplicate_is_a_no_op_and_is_not_held_back(nats, ferret, services, stream):
    """The same event again (republished after the duplicate window: a new Nats-Msg-Id) is
    acknowledged as stale on its first delivery, also while a later version of its user waits
    for a missing one; it never counts as early."""
    c = start_consumer(services, nats, ferret, CONSUMER_ACK_WAIT="5s", CONSUMER_GAP_WAIT="60s")
    v1, v2 = make_event("user_created", 1, 1), make_event("user_updated", 1, 2)
    stream.publish([v1, v2])
    c.wait_version(1, 2)

    def again(ev):
        return (ev[0], ev[1], dict(ev[2], **{"Nats-Msg-Id": "retry-" + str(uuid.uuid4())}))
    v4 = make_event("user_updated", 1, 4)
    marker = make_event("user_created", 2, 1)
    stream.publish([again(v2), v4, again(v1), again(v2), marker])
    c.wait_version(2, 1)
    assert c.doc(1)["version"] == 2, "v4 took effect before v3"
    poll(lambda: c.metric("consumer_events_stale_total") == 3, 10, "three duplicates stale")
    # Each acknowledged on its first delivery, none held back (only v4 is).
    stale = re.findall(r"stale \S+ user=1 version=(\d+) seq=\d+ delivered=(\d+) ", c.log())
    assert sorted(stale) == [("1", "1"), ("2", "1"), ("2", "1")], stale
    assert set(held_lines(c, 1)) == {4}

    v3 = make_event("user_updated", 1, 3)
    stream.publish([v3])
    c.wait_version(1, 4)
    assert applied_in_order(c, 1) == [(1, False), (2, False), (3, False), (4, False)]
    assert [h["event_id"] for h in c.history(1)] == [v1[3], v2[3], v3[3], v4[3]]
    assert c.metric("consumer_events_stale_total") == 3
    assert c.metric("consumer_version_gaps_total") == 0


def test_the_exact_previous_version_filter_on_ferretdb_directly(ferret):
    """What the in-order write relies on, straight from FerretDB 1.24: an update filtered by
    {_id, version: v-1} without upsert matches only a document at v-1, and creates none."""
    with ferret.client() as cl:
        coll = cl.order_test.users
        r = coll.update_one({"_id": 1, "version": 1}, {"$set": {"version": 2}})
        assert r.matched_count == 0 and coll.find_one({"_id": 1}) is None
        coll.insert_one({"_id": 1, "version": 1})
        r = coll.update_one({"_id": 1, "version": 2}, {"$set": {"version": 3}})
        assert r.matched_count == 0
        r = coll.update_one({"_id": 1, "version": 1}, {"$set": {"version": 2}})
        assert r.matched_count == 1 and r.modified_count == 1
        r = coll.update_one({"_id": 1, "version": 1}, {"$set": {"version": 2, "x": 1}})
        assert r.matched_count == 0
        assert coll.find_one({"_id": 1}) == {"_id": 1, "version": 2}


def test_replay_applies_each_user_in_version_order_and_crosses_gaps_at_the_end(nats, ferret,
                                                                             stream):
    """Replay reads the stream once, in stream order: an early event waits in memory for the
    versions behind it (v3 before v2 ends as v2 then v3), and one whose gap never fills is
    applied over the gap at the end of the pass and counted: user 2 has no v1 in the stream;
    user 4 has v1, v4, v3 and no v2, so v3 crosses the gap and v4 follows it, never v4 first."""
    u1 = [make_event("user_created", 1, 1), make_event("user_updated", 1, 3),
          make_event("user_updated", 1, 2)]
    u4 = [make_event("user_created", 4, 1), make_event("user_updated", 4, 4),
          make_event("user_updated", 4, 3)]
    stream.publish([u1[0], u4[0], u1[1], u4[1], make_event("user_updated", 2, 2), u1[2],
                    make_event("user_created", 3, 1), u4[2]])
    dbname = f"notif_{uuid.uuid4().hex[:8]}"
    env = {"NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "MONGODB_DB": dbname}
    r = harness.run_binary("notification-consumer", "replay", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "replay done: read 8, applied 8, stale 0, dead-lettered 0 in" in r.stderr, r.stderr
    assert "replay: 2 events applied over a gap" in r.stderr, r.stderr
    with ferret.client() as cl:
        db = cl[dbname]
        hist = list(db.user_notification_events.find({"user_id": 1}).sort("version", 1))
        assert [(h["version"], h["superseded"]) for h in hist] == [(1, False), (2, False),
                                                                   (3, False)]
        assert [h["event_id"] for h in hist] == [u1[0][3], u1[2][3], u1[1][3]]
        assert db.user_notifications.find_one({"_id": 1})["version"] == 3
        assert db.user_notifications.find_one({"_id": 2})["version"] == 2
        assert db.user_notifications.find_one({"_id": 3})["version"] == 1
        hist = list(db.user_notification_events.find({"user_id": 4}).sort("applied_at", 1))
        assert [(h["version"], h["superseded"]) for h in hist] == [(1, False), (3, False),
                                                                   (4, False)]
        assert db.user_notifications.find_one({"_id": 4})["version"] == 4


def harness_us(ts):
    """Microseconds since the epoch of an RFC 3339 time as the consumer writes it."""
    import datetime
    return int(datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
               .replace(tzinfo=datetime.timezone.utc).timestamp() * 1e6)
