"""LOG_FORMAT=json: every line a process writes on stderr is one JSON object with time, level,
service and message, and the ids it is about (request_id, trace_id, event_id, user_id) as fields;
text from outside (a forged request path, a poison event's type) stays inside its string. The
setting is read like LOG_LEVEL by every binary (README, Configuration)."""
import json
import re
import uuid

import pytest

import harness
from test_consumer_support import *  # noqa: F401,F403  (fixtures: nats, ferret, services)
from test_consumer_support import TRACEPARENT, Stream, make_event, poll, start_consumer
from test_relay import insert_rows, relay_db, relay_nats, relays, wait_drained  # noqa: F401
from user_api_fixtures import *  # noqa: F401,F403  (fixtures: pg_db, start_api)

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# The access line, as common/httpd.c writes its message: method, path, status, time, request id.
ACCESS = re.compile(r"^([A-Z]+) (.*) (\d{3}) \d+\.\dms rid=(\S+)$", re.S)
TRACE_ID = TRACEPARENT.split("-")[1]
HARNESS_LINE = re.compile(r"^--- (\d\d:\d\d:\d\d start |harness: )")
BINARIES = ["user-api", "outbox-relay", "notification-consumer", "migrate", "audit"]


def json_lines(log, service):
    """Every line of log parsed (but the harness's own, "--- 12:00:00 start user-api" and
    "--- harness: ..."): each must be a JSON object with the fields every line has, and strings
    for the ids it holds."""
    lines = [ln for ln in log.splitlines() if not HARNESS_LINE.match(ln)]
    assert lines, "nothing logged"
    out = []
    for ln in lines:
        try:
            obj = json.loads(ln)
        except ValueError as e:
            pytest.fail(f"not a JSON line ({e}): {ln!r}\nlog:\n{log[-3000:]}")
        assert isinstance(obj, dict), ln
        assert TIME.match(obj.get("time", "")), ln
        assert obj.get("level") in ("debug", "info", "warn", "error"), ln
        assert obj.get("service") == service, ln
        assert isinstance(obj.get("message"), str), ln
        extra = set(obj) - {"time", "level", "service", "message"}
        assert extra <= {"request_id", "trace_id", "event_id", "user_id"}, ln
        assert all(isinstance(obj[k], str) and obj[k] for k in extra), ln
        out.append(obj)
    return out


def access_lines(objs):
    """The access lines (one per answered request) as (obj, method, path, status, rid)."""
    out = []
    for o in objs:
        m = ACCESS.match(o["message"])
        if m:
            out.append((o, m.group(1), m.group(2), int(m.group(3)), m.group(4)))
    return out


def test_user_api_logs_json_lines_with_the_request_ids(start_api):
    api = start_api(LOG_FORMAT="json", LOG_LEVEL="debug")
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = api.post("/users", json={"name": "Json Log", "email": f"jl-{uuid.uuid4().hex}@example.com"},
                 headers={"X-Request-Id": "json-create", "traceparent": tp})
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    assert api.get(f"/users/{uid}", headers={"X-Request-Id": "json-get"}).status_code == 200
    # No traceparent: user-api starts a trace for the event, and its lines carry that one.
    r = api.put(f"/users/{uid}", json={"name": "Json Log 2", "email": f"jl-{uuid.uuid4().hex}@example.com"},
                headers={"X-Request-Id": "json-put"})
    assert r.status_code == 200, r.text
    # A path that holds a line break, a quote and a backslash, and a made-up log object.
    forged = '/users/1%0A%7B%22level%22%3A%22error%22%7D%22FORGED-JSON%5C'
    assert api.get(forged, headers={"X-Request-Id": "json-forged"}).status_code == 404
    assert api.get("/items/1%0D%0AFORGED-JSON%1B", headers={"X-Request-Id": "json-item"}).status_code == 404
    # Without X-Request-Id: a new one, in the answer and on the line.
    rid = api.get("/users?limit=1").headers["X-Request-Id"]

    def logged():
        objs = json_lines(api.service.log_text(), "user-api")
        return objs if len(access_lines(objs)) >= 6 else None
    objs = poll(logged, 10, "the six requests logged")
    by_rid = {a[4]: a for a in access_lines(objs)}
    for o, _, _, _, line_rid in by_rid.values():
        assert o.get("request_id") == line_rid, o    # every request line carries its id
    create = by_rid["json-create"][0]
    assert create["trace_id"] == tp.split("-")[1] and create["user_id"] == str(uid), create
    assert by_rid["json-get"][0]["user_id"] == str(uid)
    put = by_rid["json-put"][0]
    assert re.fullmatch(r"[0-9a-f]{32}", put.get("trace_id", "")), put
    traces = [row["headers"]["traceparent"] for row in api.outbox_for(uid)]
    assert any(t.split("-")[1] == put["trace_id"] for t in traces), (put, traces)
    assert "trace_id" not in by_rid["json-get"][0], "no traceparent, no write: no trace"
    assert by_rid[rid][1] == "GET" and by_rid[rid][3] == 200, by_rid[rid]
    # The forged text comes back whole from its string, and forged no line of its own.
    _, method, path, status, _ = by_rid["json-forged"]
    assert (method, status) == ("GET", 404) and path == '/users/1\n{"level":"error"}"FORGED-JSON\\', path
    assert by_rid["json-item"][2] == "/items/1\r\nFORGED-JSON\x1b"
    raw = api.service.log_text()
    assert "\x1b" not in raw and "\r" not in raw
    assert all(ln.startswith('{"time":') or HARNESS_LINE.match(ln) for ln in raw.splitlines())
    # "created user" is logged inside the request: it carries the request's ids too.
    created = [o for o in objs if o["message"].startswith(f"created user {uid} ")]
    assert created and created[0].get("request_id") == "json-create", created
    # Lines outside any request carry no request id.
    started = [o for o in objs if o["message"].startswith("listening on")]
    assert started and "request_id" not in started[0], started


@pytest.fixture
def stream(nats):
    s = Stream(nats)
    s.create()
    return s


def test_consumer_logs_json_lines_with_the_event_ids(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret, LOG_FORMAT="json")
    uid = 4242
    first, second = make_event("user_created", uid, 1), make_event("user_updated", uid, 2)
    stream.publish([first, second])
    c.wait_version(uid, 2)
    poison = json.loads(make_event("user_updated", uid, 3)[1])
    poison["type"] = 'x\n{"level":"error","message":"FORGED-EVENT"}'
    stream.publish_raw("user.events.updated", json.dumps(poison).encode(),
                       {"Nats-Msg-Id": "forge-json", "traceparent": TRACEPARENT})
    c.wait_metric("consumer_events_dead_lettered_total", 1)
    r = c.get(f"/notifications/user/{uid}", headers={"X-Request-Id": "json-read"})
    assert r.status_code == 200, r.text

    def logged():
        objs = json_lines(c.log(), "notification-consumer")
        done = any(a[4] == "json-read" for a in access_lines(objs))
        return objs if done and any("FORGED-EVENT" in o["message"] for o in objs) else None
    objs = poll(logged, 10, "the read and the dead letter logged")
    for ev in (first, second):
        applied = [o for o in objs if o["message"].startswith("applied ") and
                   o.get("event_id") == ev[3]]
        assert applied, (ev[3], objs[-20:])
        assert applied[0]["user_id"] == str(uid) and applied[0]["trace_id"] == TRACE_ID, applied
    dead = [o for o in objs if o["message"].startswith("dead-lettered ")]
    assert dead and dead[0].get("event_id") == "forge-json", dead
    # The reason was escaped where it was made (it is also the dead letter's header): its line
    # break is the text \n, and the quotes come back whole from the JSON string.
    assert 'type "x\\n{"level":"error","message":"FORGED-EVENT"}"' in dead[0]["message"], dead
    read = [a for a in access_lines(objs) if a[4] == "json-read"]
    assert read[0][0]["request_id"] == "json-read" and "event_id" not in read[0][0], read
    # The lane's ids end with its event: a line of the HTTP server carries none of them.
    for o, *_ in access_lines(objs):
        assert "event_id" not in o and "user_id" not in o, o


@pytest.mark.parametrize("binary", BINARIES)
def test_log_format_is_a_setting_of_every_binary(binary):
    r = harness.run_binary(binary, "--help", timeout=20)
    assert r.returncode == 0 and "LOG_FORMAT" in r.stdout and "[text]" in r.stdout, r.stdout
    r = harness.run_binary(binary, "--check", env={"LOG_FORMAT": "yaml"}, timeout=20)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert 'LOG_FORMAT "yaml"' in r.stderr and "text or json" in r.stderr, r.stderr
    r = harness.run_binary(binary, "--check", env={"LOG_FORMAT": ""}, timeout=20)
    assert r.returncode == 2 and "LOG_FORMAT is set but empty" in r.stderr, r.stderr


def test_check_prints_the_log_format():
    r = harness.run_binary("migrate", "--check", env={"LOG_FORMAT": "json"}, timeout=20)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "LOG_FORMAT=json" in r.stdout.splitlines(), r.stdout


def test_migrate_logs_json_lines(pg_db):
    """migrate, the shortest-lived process: its lines too, with nothing else on stderr."""
    r = harness.run_binary("migrate", "status", env={**pg_db.env, "LOG_FORMAT": "json"}, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    if r.stderr.strip():
        json_lines(r.stderr, "migrate")
    r = harness.run_binary("migrate", "up", env={**pg_db.env, "LOG_FORMAT": "json"}, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    objs = json_lines(r.stderr, "migrate")
    assert objs, r.stderr


def test_a_request_path_reaches_a_text_line_as_before(start_api):
    """The text format is the default and its lines did not change: no JSON, no new fields."""
    api = start_api()
    assert api.get("/users/1%0Ax", headers={"X-Request-Id": "text-rid"}).status_code == 404
    log = poll(lambda: (lambda t: t if "rid=text-rid" in t else None)(api.service.log_text()), 10,
               "the request logged")
    line = [ln for ln in log.splitlines() if "rid=text-rid" in ln][0]
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z info user-api GET /users/1\\nx 404 "
                    r"\d+\.\dms rid=text-rid$", line), line
    assert "request_id" not in log


def test_replay_logs_json_lines(nats, ferret, stream):
    """replay, run by hand: its summary is a line of the log too, and the event it applies over
    a gap is named by its fields (user 2 has no version 1 in the stream)."""
    gap = make_event("user_updated", 2, 2)
    stream.publish([make_event("user_created", 1, 1), gap])
    env = {"NATS_URL": nats.url, "MONGODB_URI": ferret.uri,
           "MONGODB_DB": f"notif_{uuid.uuid4().hex[:8]}", "LOG_FORMAT": "json", "LOG_LEVEL": "debug"}
    r = harness.run_binary("notification-consumer", "replay", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    objs = json_lines(r.stderr, "notification-consumer replay")
    assert any(o["message"].startswith("replay done: read 2, applied 2, stale 0, dead-lettered 0 in")
               for o in objs), r.stderr
    crossed = [o for o in objs if "applied over a gap" in o["message"] and "event_id" in o]
    assert crossed and crossed[0]["event_id"] == gap[3] and crossed[0]["user_id"] == "2", r.stderr


def test_relay_logs_json_lines_with_the_buried_event(relay_db, relay_nats, relays):
    """The relay's lines, and the row it moves to outbox_dead named by its event_id."""
    huge = insert_rows(relay_db, 1, pad=1_200_000)   # over nats-server's default 1 MiB max_payload
    insert_rows(relay_db, 2)
    relay = relays.start(LOG_FORMAT="json")
    wait_drained(relay_db)
    relay.stop()
    objs = json_lines(relay.log(), "outbox-relay")
    buried = [o for o in objs if "moved to outbox_dead" in o["message"]]
    assert buried and buried[0].get("event_id") == huge[0] and buried[0]["level"] == "error", buried
    assert all(o.get("event_id") in (None, huge[0]) for o in objs), objs
