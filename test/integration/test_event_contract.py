"""The event contract (docs/events.md, common/event_contract.h) end to end: events built the way the
relay builds them (user-api's statements, the relay's claim, real PostgreSQL and JetStream) have
exactly the documented shape, and the consumer parses and applies each of them. An event of the
schema version before the current one is upcast and applied too; one outside the range is poison."""
import json
import pathlib
import re
import uuid

import pytest

import harness

from test_consumer_e2e import Stack
from test_consumer_support import Stream, make_event, poll

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "events.md"
HEADER = pathlib.Path(__file__).resolve().parents[2] / "common" / "event_contract.h"


def documented_examples():
    """The JSON examples of docs/events.md, by type."""
    out = {}
    for block in re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.S):
        ev = json.loads(block)
        out[ev["type"]] = ev
    return out


def header_define(name):
    m = re.search(rf'#define {name}\s+(\S+)', HEADER.read_text())
    assert m, name
    return m.group(1).strip('"')


def shape(value):
    """The JSON types of value, recursively: what the docs promise about a body."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


@pytest.fixture
def stack(db, nats, ferret, services):
    return Stack(db, nats, ferret, services)


def test_every_kind_has_the_documented_shape_and_is_applied(stack):
    docs = documented_examples()
    assert set(docs) == {"user_created", "user_updated", "user_deleted", "user_snapshot"}
    current = int(header_define("EVENT_SCHEMA_VERSION"))

    email = f"ann-{uuid.uuid4().hex[:8]}@example.com"
    r = stack.call("POST", "/users", json={"name": "Ann", "email": email})
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    assert stack.call("PUT", f"/users/{uid}", json={"name": "Ann B", "email": email}).status_code == 200
    pg_env = stack.db.env if isinstance(stack.db.env, dict) else stack.db.env()
    snap = harness.run_binary("outbox-relay", "snapshot", env=dict(pg_env, NATS_URL=stack.nats.url),
                              timeout=60)
    assert snap.returncode == 0, snap.stderr
    poll(lambda: (stack.consumer.doc(uid) or {}).get("version") == 2, 20, "version 2 applied")
    assert stack.call("DELETE", f"/users/{uid}").status_code in (200, 204)
    stack.consumer.wait_version(uid, 3)    # the delete applied, with its history entry

    msgs = poll(lambda: (lambda m: m if len(m) == 4 else None)(Stream(stack.nats).messages("USER_EVENTS")),
                20, "4 events on the stream")
    by_type = {}
    for subject, data, headers in msgs:
        body = json.loads(data)
        by_type[body["type"]] = body
        assert shape(body) == shape(docs[body["type"]]), (body, docs[body["type"]])
        assert body["schema_version"] == current
        assert subject == header_define("EVENT_SUBJECT_" + body["type"].split("_", 1)[1].upper())
        assert headers["Nats-Msg-Id"] == body["event_id"]
        assert headers["Content-Type"] == "application/json"
        assert body["payload"]["deleted"] is (body["type"] == "user_deleted")
    assert [json.loads(m[1])["payload"]["version"] for m in msgs] == [1, 2, 2, 3]

    # The consumer parsed every one: three took effect, the snapshot found the copy at its version.
    hist = stack.consumer.get(f"/notifications/user/{uid}/events?include=superseded").json()
    assert sorted(h["event_id"] for h in hist) == sorted(b["event_id"] for b in by_type.values())
    assert stack.consumer.metric("consumer_events_dead_lettered_total") == 0


def test_the_version_before_is_upcast_and_one_outside_the_range_is_poison(stack):
    stream = Stream(stack.nats)
    poll(lambda: "USER_EVENTS" in stream.stream_names(), 20, "the relay to create the stream")
    uid = 900001
    subject, body, headers, eid, _ = make_event("user_created", uid, 1)
    old = json.loads(body)
    old["schema_version"] = 1               # as a producer before version 2 wrote it
    del old["payload"]["deleted"]
    stream.publish_raw(subject, json.dumps(old).encode(), headers)
    poll(lambda: (stack.consumer.doc(uid) or {}).get("version") == 1, 20, "the version 1 event applied")
    assert stack.consumer.user(uid)["name"] == old["payload"]["name"]

    subject, body, headers, eid, _ = make_event("user_updated", uid, 2)
    new = json.loads(body)
    new["schema_version"] = int(header_define("EVENT_SCHEMA_VERSION")) + 1
    stream.publish_raw(subject, json.dumps(new).encode(), headers)
    dlq = poll(lambda: stream.messages("USER_EVENTS_DLQ") or None, 20, "a dead letter")
    assert "unknown schema_version" in dlq[0][2]["Dlq-Reason"]
    assert (stack.consumer.doc(uid) or {}).get("version") == 1
