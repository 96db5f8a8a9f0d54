"""Personal data does not outlive a deletion (issue 13, item 7), with real services: a user
deleted through user-api leaves no name or email in its deletion event (the outbox row, the stream
message), in its document or in its history (read from MongoDB directly and through the REST
API), also after a replay into the live collections, a replay --fresh, and a replay that rebuilds
the copy from nothing while the stream still holds the user's older events. A deletion in the old
shape, with name and email (published straight to the stream), is applied without storing them,
and an older event of a deleted user that arrives late brings none back."""
import json
import uuid

import pytest

import harness
from test_consumer_e2e import Stack
from test_consumer_support import Consumer, Stream, make_event, poll

PERSONAL = ("name", "email")


@pytest.fixture
def stack(db, nats, ferret, services):
    return Stack(db, nats, ferret, services)


def create(stack, name):
    email = f"{name.lower().replace(' ', '.')}-{uuid.uuid4().hex[:8]}@example.com"
    r = stack.call("POST", "/users", json={"name": name, "email": email})
    assert r.status_code == 201, r.text
    return r.json()


def rename(stack, user, name):
    r = stack.call("PUT", f"/users/{user['id']}", json={"name": name, "email": user["email"]})
    assert r.status_code == 200, r.text
    return r.json()


def replay(stack, *args):
    env = {"NATS_URL": stack.nats.url, "MONGODB_URI": stack.ferret.uri, "MONGODB_DB": stack.dbname}
    r = harness.run_binary("notification-consumer", "replay", *args, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "dead-lettered 0" in r.stderr, r.stderr
    return r


def everything_stored(stack) -> str:
    """Every document of the copy's database (both collections, and any other), as one text."""
    with stack.ferret.client() as c:
        db = c[stack.dbname]
        return "\n".join(json.dumps(d, default=str) for name in db.list_collection_names()
                         for d in db[name].find())


def assert_forgotten(stack, uid, secrets, served=True):
    """User uid is deleted and nothing the consumer stores or (with served) serves holds its
    personal data."""
    doc = stack.consumer.doc(uid)
    assert doc is not None and doc["deleted"] is True, doc
    assert not set(PERSONAL) & set(doc), doc
    hist = stack.consumer.history(uid)
    assert hist and hist[-1]["type"] == "user_deleted", hist
    for h in hist:
        assert not set(PERSONAL) & set(h), h
    stored = everything_stored(stack)
    leaked = [s for s in secrets if s in stored]
    assert not leaked, f"{leaked} still stored in {stack.dbname}"
    if not served:
        return
    assert stack.consumer.get(f"/notifications/user/{uid}").status_code == 404
    for path in (f"/notifications/user/{uid}/events",
                 f"/notifications/user/{uid}/events?include=superseded"):
        r = stack.consumer.get(path)
        assert r.status_code == 200, r.text
        assert r.json() and all(e["name"] is None and e["email"] is None for e in r.json()), r.text
        assert not any(s in r.text for s in secrets), r.text


def assert_remembered(stack, user):
    """A user that was not deleted keeps its name and email in its document and history."""
    doc = stack.consumer.doc(user["id"])
    assert (doc["name"], doc["email"], doc["deleted"]) == (user["name"], user["email"], False), doc
    assert all(h["email"] == user["email"] for h in stack.consumer.history(user["id"])
               if not h.get("superseded"))


def test_a_deleted_users_name_and_email_are_gone_from_events_copy_and_history_also_after_replays(
        stack):
    gone = create(stack, "Gone Person")
    gone_v2 = rename(stack, gone, "Gone Person Renamed")
    kept = create(stack, "Kept Person")
    secrets = (gone["name"], gone_v2["name"], gone["email"])
    stack.consumer.wait_version(gone["id"], 2)
    # Before the deletion the history holds each version's name, as for every user.
    assert [h["name"] for h in stack.consumer.history(gone["id"])] == [gone["name"], gone_v2["name"]]
    r = stack.call("DELETE", f"/users/{gone['id']}")
    assert r.status_code == 204, r.text

    # The deletion's outbox row (kept for RELAY_RETAIN after it was published) and its message.
    rows = stack.db.sql("SELECT event_type, schema_version, payload FROM outbox "
                        "WHERE aggregate_id = %s ORDER BY id", gone["id"])
    assert [(t, v) for t, v, _ in rows] == [("user_created", 3), ("user_updated", 3),
                                            ("user_deleted", 3)], rows
    deletion = rows[-1][2]
    assert deletion["deleted"] is True and deletion["version"] == 3
    assert not set(PERSONAL) & set(deletion), deletion

    def deletion_message():
        for subject, data, _ in Stream(stack.nats).messages("USER_EVENTS"):
            body = json.loads(data)
            if body["type"] == "user_deleted" and body["payload"]["id"] == gone["id"]:
                return subject, data, body
        return None
    subject, data, body = poll(deletion_message, 20, "the deletion on the stream")
    assert subject == "user.events.deleted" and body["schema_version"] == 3
    assert set(body["payload"]) == {"id", "version", "updated_at", "deleted"}, body
    assert not any(s.encode() in data for s in secrets), data

    stack.consumer.wait_version(gone["id"], 3)
    assert_forgotten(stack, gone["id"], secrets)
    assert_remembered(stack, kept)

    # The stream still holds the created and updated events with the name and email: a replay
    # into the live collections, and one into a fresh collection merged in, bring none back.
    replay(stack)
    assert_forgotten(stack, gone["id"], secrets)
    r = replay(stack, "--fresh")
    assert "fresh collection merged into the live one" in r.stderr
    assert_forgotten(stack, gone["id"], secrets)
    assert_remembered(stack, kept)
    assert len(stack.consumer.history(gone["id"])) == 3

    # Rebuilt from nothing: the copy and its history dropped, the live consumer stopped, so the
    # replay writes every entry anew from the old events, then applies the deletion.
    assert stack.consumer.service.stop() == 0
    stack.consumer.drop()
    replay(stack)
    assert_forgotten(stack, gone["id"], secrets, served=False)
    assert_remembered(stack, kept)
    assert [h["version"] for h in stack.consumer.history(gone["id"])] == [1, 2, 3]
    svc = stack.services.start("notification-consumer", stack.consumer.service.env)
    stack.consumer = Consumer(svc, stack.ferret, stack.dbname)
    poll(lambda: stack.consumer.ready().status_code == 200, 30, "consumer ready")
    assert_forgotten(stack, gone["id"], secrets)


@pytest.mark.parametrize("schema_version", [1, 2])
def test_an_old_style_deletion_with_name_and_email_is_applied_without_storing_them(
        stack, schema_version):
    """Deletions written before version 3 carry the user's name and email; a stream may still
    hold them. They are applied, and neither the tombstone nor the history keeps them. An older
    event of the user that arrives after the deletion (a new event id: no duplicate) is recorded
    as superseded, without them."""
    stream = Stream(stack.nats)
    poll(lambda: "USER_EVENTS" in stream.stream_names(), 20, "the relay to create the stream")
    uid = 910000 + schema_version
    name, email = "Old Shape", f"old-shape-{uuid.uuid4().hex[:8]}@example.com"
    events = [make_event("user_created", uid, 1, name=name, email=email),
              make_event("user_updated", uid, 2, name=name + " B", email=email),
              make_event("user_deleted", uid, 3, name=name + " B", email=email)]
    deletion = json.loads(events[2][1])
    deletion["schema_version"] = schema_version
    assert deletion["payload"]["name"] == name + " B" and deletion["payload"]["email"] == email
    stream.publish(events[:2])
    stack.consumer.wait_version(uid, 2)
    stream.publish_raw(events[2][0], json.dumps(deletion).encode(), events[2][2])
    stack.consumer.wait_version(uid, 3)
    assert_forgotten(stack, uid, (name, email))

    late = make_event("user_updated", uid, 2, name="Late Name", email="late@example.com")
    stream.publish([late])
    poll(lambda: any(h["event_id"] == late[3] for h in stack.consumer.history(uid)), 20,
         "the late event recorded")
    entry = next(h for h in stack.consumer.history(uid) if h["event_id"] == late[3])
    assert entry["superseded"] is True, entry
    assert_forgotten(stack, uid, (name, email, "Late Name", "late@example.com"))
    assert stack.consumer.metric("consumer_events_dead_lettered_total") == 0


def test_replay_fresh_keeps_the_users_whose_events_left_the_stream(stack):
    """A replay rebuilds only what the stream still holds (RELAY_STREAM_MAX_AGE ages events out,
    a purge removes them): when the stream no longer starts at sequence 1, replay --fresh keeps
    the live documents of users it found no event of, instead of removing them from the copy."""
    old = create(stack, "Aged Out")
    stack.consumer.wait_version(old["id"], 1)
    new = create(stack, "Still There")
    stack.consumer.wait_version(new["id"], 1)
    # The relay would publish its kept rows again (RELAY_RETAIN): stopped, it cannot.
    assert stack.relay.stop() == 0
    stream = Stream(stack.nats)
    ids = [json.loads(d)["payload"]["id"] for _, d, _ in stream.messages("USER_EVENTS")]
    assert ids == [old["id"], new["id"]], ids     # sequences 1 and 2

    async def purge(nc, js):
        return await js.purge_stream("USER_EVENTS", seq=2)
    assert stream._run(purge)
    r = replay(stack, "--fresh")
    assert "the stream starts at seq 2" in r.stderr, r.stderr
    assert "fresh collection merged into the live one" in r.stderr
    for u in (old, new):
        got = stack.consumer.user(u["id"])
        assert got and (got["name"], got["email"]) == (u["name"], u["email"]), (u, got)
