"""Hostile input reaches no log line and no metric raw: a request path or an event type holding a
line break forges no log line, a request method cannot break /metrics or grow it without bound
(user-api and notification-consumer, which share common/httpd.c), and settings set but empty
mean empty (README, Configuration)."""
import json
import os
import re
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import harness
from test_consumer_support import *  # noqa: F401,F403  (fixtures: nats, ferret, services)
from test_consumer_support import Stream, make_event, poll, start_consumer
from user_api_fixtures import *  # noqa: F401,F403  (fixtures: pg_db, start_api)
from user_api_fixtures import base_env

FORGED = "2026-01-01T00:00:00.000Z"
# A line as log.c writes it: time, level, process, message.
LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (debug|info|warn|error) [a-z-]+ ")
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}


def assert_no_forged_line(log, marker):
    """No line of log starts with the forged time; the text after it stays inside the line of the
    call that logged it, escaped (\\n), and every line that holds marker is one of log.c's."""
    assert not [ln for ln in log.splitlines() if ln.startswith(FORGED)], log[-3000:]
    lines = [ln for ln in log.splitlines() if marker in ln]
    assert lines, f"nothing logged {marker}; log:\n{log[-3000:]}"
    for ln in lines:
        assert LOG_LINE.match(ln), ln
        assert "\\n" + FORGED in ln, ln


@pytest.fixture
def stream(nats):
    s = Stream(nats)
    s.create()
    return s


# --- logs --------------------------------------------------------------------------------------

def test_a_request_path_cannot_forge_a_log_line(start_api):
    api = start_api(LOG_LEVEL="debug")   # a 404 outside any route is logged at debug level
    forged = f"%0A{FORGED}%20error%20user-api%20FORGED-LINE"
    assert api.get(f"/items/1{forged}").status_code == 404
    assert api.get(f"/users/1{forged}").status_code == 404
    assert api.get(f"/users/1%0D{forged}%1B%5B31m").status_code == 404
    log = poll(lambda: (lambda t: t if t.count("FORGED-LINE") >= 3 else None)(api.service.log_text()),
               10, "the three requests logged")
    assert_no_forged_line(log, "FORGED-LINE")
    assert "\\r\\n" + FORGED in log and "\\x1b[31m" in log
    assert "\x1b" not in log and "\r" not in log


def test_a_poison_event_cannot_forge_a_consumer_log_line(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret)
    body = json.loads(make_event("user_updated", 1, 2)[1])
    body["type"] = f"x\n{FORGED} info FORGED-EVENT"    # "unknown event type" quotes it
    stream.publish_raw("user.events.updated", json.dumps(body).encode(), {"Nats-Msg-Id": "forge"})
    c.wait_metric("consumer_events_dead_lettered_total", 1)
    log = poll(lambda: (lambda t: t if "FORGED-EVENT" in t else None)(c.log()), 10,
               "the dead letter logged")
    assert_no_forged_line(log, "FORGED-EVENT")
    # The dead letter's reason header quotes the type escaped: one header, no line break in it.
    (_, _, headers), = stream.messages("USER_EVENTS_DLQ")
    reason = headers.get("Dlq-Reason", "")
    assert "FORGED-EVENT" in reason and "\\n" in reason, headers
    assert "\n" not in reason and "\r" not in reason, headers
    assert not any("FORGED" in k for k in headers), headers


# --- metrics -----------------------------------------------------------------------------------

def raw_request(port, method, path):
    """One request with any method (requests and http.client refuse some); returns the status
    line."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                  .encode("latin-1"))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def check_hostile_methods(port, path, get_metrics, pid, report):
    """X"Y and 5,000 distinct methods: /metrics parses with Prometheus's own parser, its method
    labels are from the fixed set, and its series and size stay bounded."""
    assert raw_request(port, 'X"Y', path).startswith(b"HTTP/1.1 ")
    rss_before = rss_kib(pid)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: raw_request(port, f"M{i:05d}", path), range(5000)))
    assert all(a.startswith(b"HTTP/1.1 ") for a in answers), {a for a in answers}
    rss_after = rss_kib(pid)
    text = get_metrics()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests_total = [s for s in families["http_requests"].samples if s.name == "http_requests_total"]
    methods = {s.labels["method"] for s in requests_total}
    assert methods <= KNOWN_METHODS, methods
    assert "other" in methods
    assert sum(s.value for s in requests_total if s.labels["method"] == "other") >= 5001
    assert len(requests_total) < 100, len(requests_total)
    assert len(text) < 64 * 1024, len(text)
    report(f"{len(requests_total)} http_requests_total series, /metrics {len(text)} bytes, "
           f"RSS {rss_before} -> {rss_after} KiB over 5,000 distinct methods")


def test_user_api_metrics_survive_hostile_methods(pg_db):
    """On bin/user-api, not the sanitizer build the other user-api tests run: AddressSanitizer
    keeps freed memory in quarantine (hundreds of MB), which would hide what the RSS says."""
    port = harness.free_port()
    svc = harness.Service("user-api", env=base_env(pg_db, USER_API_PORT=port), port=port)
    svc.start()
    try:
        check_hostile_methods(port, "/users",
                              lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=15).text,
                              svc.proc.pid, lambda s: print(f"\nuser-api: {s}"))
    finally:
        svc.close()


def test_consumer_metrics_survive_hostile_methods(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret)
    port = int(c.base.rsplit(":", 1)[1])
    check_hostile_methods(port, "/notifications", lambda: c.get("/metrics").text,
                          c.service.proc.pid, lambda s: print(f"\nnotification-consumer: {s}"))


# --- settings set but empty --------------------------------------------------------------------

def test_an_empty_nats_url_turns_nudges_off(start_api):
    """README: NATS_URL='' disables user-api's nudges. It says so at start, never tries NATS,
    and a write neither sends nor skips a nudge."""
    api = start_api(NATS_URL="")
    r = api.post("/users", json={"name": "No nudges", "email": f"nn-{os.getpid()}@example.com"})
    assert r.status_code == 201, r.text
    log = api.service.log_text()
    assert "NATS_URL is empty: no wake-up nudges" in log, log
    assert "nats:" not in log, log         # no "connected to", no "not reachable yet"
    nudges = [ln for ln in api.get("/metrics").text.splitlines()
              if ln.startswith("outbox_nudges_total{")]
    assert nudges and all(ln.endswith(" 0") for ln in nudges), nudges


@pytest.mark.parametrize("binary,name", [
    ("outbox-relay", "NATS_URL"), ("notification-consumer", "NATS_URL"),
    ("notification-consumer", "MONGODB_URI"), ("audit", "MONGODB_URI"),
    ("user-api", "POSTGRES_HOST"), ("outbox-relay", "POSTGRES_DB"),
    ("notification-consumer", "CONSUMER_BATCH"), ("user-api", "LOG_LEVEL"),
])
def test_an_empty_setting_that_needs_a_value_is_refused_naming_it(binary, name):
    for args in (["--check"], []):
        r = harness.run_binary(binary, *args, env={name: ""}, timeout=20)
        assert r.returncode == 2, (binary, args, r.returncode, r.stdout, r.stderr)
        assert f"{name} is set but empty" in r.stderr, r.stderr
