"""The checker of test/chaos is not blind: after a small real run that it passes (writes through
user-api, a snapshot, the relay and the consumer), one fault of each kind is planted directly in
MongoDB, the stream or the request log; the checker must fail and count the fault under its own
figure. Each plant is removed afterwards, and the checker passes again at the end. (Losses at
each hop are planted by test_chaos.py.)"""
import datetime
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))

from checker import applied_time, check  # noqa: E402
from load import LoadGen  # noqa: E402
from system import MONGO_DB, STREAM, System, js_call, read_stream  # noqa: E402

SEED = 4242


@pytest.fixture(scope="module")
def run():
    """One small real run: {system, ops}. The stream's duplicate window is 1 s, so that a copy
    of an event published by the test lands in the stream as a republish after the window would."""
    system = System(extra_env={"outbox-relay": {"RELAY_DUPLICATE_WINDOW": "1s"}}).start()
    try:
        load = LoadGen(system.api_url, threads=2, seed=SEED, rate=20, max_users=2).start()
        try:
            load.wait_ok(20, 30)
            # Snapshot events repeat versions already applied: they arrive stale and are recorded
            # as superseded, which the checker must not take for applied ones.
            r = subprocess.run([str(harness.bin_dir() / "outbox-relay"), "snapshot"],
                               env=harness.service_env(system.pg.env), capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            load.wait_ok(40, 30)
        finally:
            load.stop()
        rep = check(system, load.ops, drain_timeout=60)
        print(rep.text())
        assert rep.passed, rep.text()
        assert rep.figures["superseded"] > 0, rep.line()
        yield {"system": system, "ops": load.ops}
    finally:
        system.close()


def coll(system, name):
    c = system.ferret.client()
    return c, c[MONGO_DB][name]


def history(system, **flt) -> list[dict]:
    c, h = coll(system, "user_notification_events")
    with c:
        return sorted(h.find(flt), key=lambda e: (e["user_id"], e["version"]))


def set_entry(system, event_id, **fields):
    c, h = coll(system, "user_notification_events")
    with c:
        assert h.update_one({"_id": event_id}, {"$set": fields}).matched_count == 1


def live_users(system) -> list[int]:
    return [r[0] for r in system.pg.sql("SELECT id FROM users ORDER BY id")]


def applied_of(system, uid) -> list[dict]:
    return [e for e in history(system, user_id=uid) if not e.get("superseded")]


def user_with(system, n) -> tuple[int, list[dict]]:
    """A live user with at least n applied history entries, and those entries in version order."""
    for uid in live_users(system):
        hs = applied_of(system, uid)
        if len(hs) >= n:
            return uid, hs
    pytest.fail(f"no live user with {n} applied versions")


def planted(run, figure, also=(), ops=None):
    """Runs the checker; it must fail with figure > 0, and with nothing failing but figure and
    the figures in also (which the same plant may move as well). Returns the report."""
    rep = check(run["system"], ops if ops is not None else run["ops"], drain_timeout=30)
    print(rep.text())
    assert not rep.passed, rep.text()
    assert rep.figures[figure] > 0, rep.text()
    assert set(rep.failures()) <= {figure, *also}, rep.text()
    return rep


def test_a_version_applied_twice_is_a_double(run):
    """A superseded snapshot entry turned applied: its version now has two applying entries."""
    system = run["system"]
    snap = next(e for e in history(system, type="user_snapshot", superseded=True)
                if e["user_id"] in live_users(system))
    set_entry(system, snap["_id"], superseded=False)
    try:
        rep = planted(run, "double", also={"bad_read"})
        assert f"user {snap['user_id']} version {snap['version']} took effect 2 times" in rep.text()
    finally:
        set_entry(system, snap["_id"], superseded=True)


def test_a_superseded_entry_never_stands_in_for_an_applied_one(run):
    system = run["system"]
    uid, hs = user_with(system, 2)
    victim = hs[0]
    set_entry(system, victim["_id"], superseded=True)
    try:
        rep = planted(run, "skipped", also={"bad_read"})
        assert f"user {uid}: version {victim['version']} never took effect" in rep.text()
        assert rep.figures["lost"] == 0, rep.line()
    finally:
        set_entry(system, victim["_id"], superseded=False)


def test_wrong_content_at_the_right_version_is_a_mismatch(run):
    """An earlier version's entry with another name: the final document is still right."""
    system = run["system"]
    uid, hs = user_with(system, 2)
    victim = hs[0]
    set_entry(system, victim["_id"], name="planted name")
    try:
        rep = planted(run, "mismatch")
        assert f"user {uid} version {victim['version']}: history entry" in rep.text()
    finally:
        set_entry(system, victim["_id"], name=victim["name"])


def deleted_user(system) -> tuple[int, list[dict]]:
    """A deleted user of the run, and its applied history entries in version order (created
    first, deleted last): none of them holds its name or email."""
    for uid in {e["user_id"] for e in history(system, type="user_deleted")}:
        hs = applied_of(system, uid)
        if len(hs) >= 2 and uid not in live_users(system):
            assert not any("name" in e or "email" in e for e in history(system, user_id=uid)), hs
            return uid, hs
    pytest.fail("no deleted user in the run")


def test_a_deleted_users_name_left_in_its_history_is_personal(run):
    system = run["system"]
    uid, hs = deleted_user(system)
    victim = hs[0]
    set_entry(system, victim["_id"], name="Kept Name", email="kept@example.com")
    try:
        rep = planted(run, "personal")
        assert f"deleted user {uid} version {victim['version']}: history entry" in rep.text()
        assert rep.figures["mismatch"] == 0, rep.line()
    finally:
        c, h = coll(system, "user_notification_events")
        with c:
            h.update_one({"_id": victim["_id"]}, {"$unset": {"name": "", "email": ""}})


def test_a_deleted_users_entry_with_other_content_is_still_a_mismatch(run):
    """Without personal data to compare, the rest of a deleted user's entry still is."""
    system = run["system"]
    uid, hs = deleted_user(system)
    victim = hs[0]
    set_entry(system, victim["_id"], deleted=True)
    try:
        rep = planted(run, "mismatch")
        assert f"deleted user {uid} version {victim['version']}: history entry" in rep.text()
    finally:
        set_entry(system, victim["_id"], deleted=False)


def test_a_tombstone_that_kept_an_email_is_personal(run):
    system = run["system"]
    uid, _ = deleted_user(system)
    c, docs = coll(system, "user_notifications")
    with c:
        assert docs.update_one({"_id": uid}, {"$set": {"email": "kept@example.com"}}).matched_count
    try:
        rep = planted(run, "personal")
        assert f"deleted user {uid}: its tombstone still holds" in rep.text()
    finally:
        c, docs = coll(system, "user_notifications")
        with c:
            docs.update_one({"_id": uid}, {"$unset": {"email": ""}})


def test_an_older_version_applied_after_a_newer_one_is_out_of_order(run):
    system = run["system"]
    uid, hs = user_with(system, 2)
    a, b = hs[0], hs[1]
    set_entry(system, a["_id"], applied_at=b["applied_at"])
    set_entry(system, b["_id"], applied_at=a["applied_at"])
    try:
        rep = planted(run, "out_of_order", also={"bad_read"})
        assert f"user {uid}: version {a['version']} applied at" in rep.text()
    finally:
        set_entry(system, a["_id"], applied_at=a["applied_at"])
        set_entry(system, b["_id"], applied_at=b["applied_at"])


def test_two_processes_applying_one_user_in_turn_are_two_writers(run):
    """Three applies of one user within the lease TTL, the middle one by another process."""
    system = run["system"]
    for uid in live_users(system):
        hs = applied_of(system, uid)
        triple = next((hs[i:i + 3] for i in range(len(hs) - 2)
                       if applied_time(hs[i + 2]["applied_at"]) -
                       applied_time(hs[i]["applied_at"]) < system.lease_ttl()), None)
        if triple:
            break
    else:
        pytest.fail("no user with three applies within the lease TTL")
    mid = triple[1]
    set_entry(system, mid["_id"], applied_by=str(uuid.uuid4()))
    try:
        rep = planted(run, "two_writers")
        assert f"user {uid}: " in rep.text() and "again" in rep.text()
    finally:
        set_entry(system, mid["_id"], applied_by=mid["applied_by"])


def test_a_live_copy_without_its_user_is_an_orphan(run):
    system = run["system"]
    c, docs = coll(system, "user_notifications")
    with c:
        docs.insert_one({"_id": 10**9, "user_id": 10**9, "name": "orphan", "version": 1,
                         "email": "orphan@example.com", "deleted": False})
    try:
        rep = planted(run, "orphan")
        assert f"user {10**9} is in MongoDB" in rep.text()
    finally:
        c, docs = coll(system, "user_notifications")
        with c:
            docs.delete_one({"_id": 10**9})


def test_a_write_answered_as_failed_but_committed_is_a_phantom(run):
    """The request log says a create failed with 503; PostgreSQL committed it."""
    ok = next(o for o in run["ops"] if o["kind"] == "create" and o["status"] == "ok")
    lie = {**ok, "status": "failed", "code": 503, "uid": None, "version": None}
    ops = [o for o in run["ops"] if o is not ok] + [lie]
    # The user's later requests still refer to it; only the create's own answer is planted.
    rep = planted(run, "phantom", ops=ops)
    assert "create of user" in rep.text() and "failed (503) but was written" in rep.text()


def test_an_applied_event_that_was_never_committed_is_a_phantom(run):
    system = run["system"]
    uid, hs = user_with(system, 1)
    last = hs[-1]
    fake = {**last, "_id": str(uuid.uuid4()), "version": last["version"] + 5,
            "applied_at": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")}
    fake["event_id"] = fake["_id"]
    c, h = coll(system, "user_notification_events")
    with c:
        h.insert_one(fake)
    try:
        rep = planted(run, "phantom", also={"bad_read"})
        assert f"the history holds event {fake['event_id']}, which PostgreSQL never committed" \
            in rep.text()
    finally:
        c, h = coll(system, "user_notification_events")
        with c:
            h.delete_one({"_id": fake["_id"]})


def test_a_wrong_read_answer_is_caught(run):
    """The copy's document answers another user_id: only the read API shows it."""
    system = run["system"]
    uid = live_users(system)[0]
    c, docs = coll(system, "user_notifications")
    with c:
        docs.update_one({"_id": uid}, {"$set": {"user_id": uid + 1000}})
    try:
        rep = planted(run, "bad_read")
        assert f"GET /notifications/user/{uid} answered 200" in rep.text()
    finally:
        c, docs = coll(system, "user_notifications")
        with c:
            docs.update_one({"_id": uid}, {"$set": {"user_id": uid}})


# --- duplicates in the stream, outside the duplicate window ---------------------------------------

def republish(system, uid) -> tuple[dict, int]:
    """Publishes a copy of the last event of user uid (same subject, body and Nats-Msg-Id), outside
    the stream's 1 s duplicate window; returns (the original message, the copy's sequence)."""
    msgs = [m for m in read_stream(system.nats_url()) if m["body"]["payload"]["id"] == uid]
    orig = msgs[-1]

    async def pub(js):
        headers = {k: v for k, v in orig["headers"].items() if not k.startswith("Nats-Expected")}
        ack = await js.publish(orig["subject"], json.dumps(orig["body"]).encode(), stream=STREAM,
                               headers=headers)
        assert not ack.duplicate, "the copy fell inside the duplicate window"
        return ack.seq
    return orig, js_call(system.nats_url(), pub)


def delete_msg(system, seq):
    async def fn(js):
        await js.delete_msg(STREAM, seq)
    js_call(system.nats_url(), fn)


def test_a_duplicate_the_consumer_absorbed_is_counted_not_failed(run):
    system = run["system"]
    uid = live_users(system)[0]
    orig, seq = republish(system, uid)
    try:
        rep = check(system, run["ops"], drain_timeout=30)
        print(rep.text())
        assert rep.passed, rep.text()
        assert rep.figures["dup_stream"] == 1, rep.line()
        assert rep.figures["dup_absorbed"] == 1 and rep.figures["dup_applied"] == 0, rep.line()
        assert rep.figures["stale_acked"] >= 1, rep.line()
    finally:
        delete_msg(system, seq)


def test_a_duplicate_that_took_effect_twice_fails(run):
    """The copy was taken back one version (as a second writer on FerretDB could) while the
    consumer was stopped; the republished last event then takes effect a second time."""
    system = run["system"]
    consumer = system.nodes["consumer"]
    uid, hs = user_with(system, 2)
    last = hs[-1]
    consumer.stop()
    c, docs = coll(system, "user_notifications")
    with c:
        docs.update_one({"_id": uid}, {"$set": {"version": last["version"] - 1}})
    orig, seq = republish(system, uid)
    assert orig["body"]["event_id"] == last["event_id"]
    consumer.start()
    try:
        harness.wait_for(lambda: history(system, _id=last["_id"])[0].get("reapplied"), 30, 0.2,
                         "the copy to take the republished event again")
        rep = planted(run, "dup_applied", also={"double"})
        assert rep.figures["double"] >= 1 and rep.figures["dup_stream"] == 1, rep.line()
        assert f"event {last['event_id']} (user {uid} version {last['version']}) is 2 times in the " \
            "stream and took effect 2 times" in rep.text()
    finally:
        delete_msg(system, seq)
        c, h = coll(system, "user_notification_events")
        with c:
            h.update_one({"_id": last["_id"]},
                         {"$unset": {"reapplied": "", "reapplied_at": "", "reapplied_by": "",
                                     "reapplied_seq": ""}})


def test_the_checker_passes_again_once_the_plants_are_gone(run):
    rep = check(run["system"], run["ops"], drain_timeout=30)
    print(rep.text())
    assert rep.passed, rep.text()
