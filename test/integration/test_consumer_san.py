"""The consumer's hand-made pull loop under AddressSanitizer and UndefinedBehaviorSanitizer
(bin-san from `make san`, or $SAN_BIN_DIR: harness.san_binary, which fails the test rather than
scan a build without sanitizers): many short pull requests that expire empty, bursts larger than a
batch so requests end with messages still on the way (leftovers read by the next round), poison,
reads waiting for versions, a replay, and a clean SIGTERM, with leak checking. About 5 seconds."""
import os
import time

import pytest

import harness
from test_consumer_support import Stream, make_event, start_consumer, poll


@pytest.fixture
def san_bin():
    try:
        return harness.san_binary("notification-consumer")
    except RuntimeError as e:
        pytest.fail(str(e))


def test_fetch_loop_under_sanitizers(nats, ferret, services, san_bin):
    stream = Stream(nats)
    stream.create()
    c = start_consumer(services, nats, ferret, binary=san_bin, CONSUMER_BATCH=7,
                       CONSUMER_FETCH_EXPIRY="100ms", ASAN_OPTIONS=os.environ.get("CONSUMER_SAN_ASAN_OPTIONS", "detect_leaks=1"),
                       UBSAN_OPTIONS="print_stacktrace=1")
    time.sleep(2)  # about 20 pull requests that expire with a 408
    last = {}
    for burst in range(6):
        evs = []
        for uid in range(1, 11):
            v = last.get(uid, 0) + 1
            last[uid] = v
            evs.append(make_event("user_created" if v == 1 else "user_updated", uid, v))
        stream.publish(evs * 2)  # each twice under the same id: the stream keeps one
        if burst == 2:
            stream.publish_raw("user.events.updated", b"\xff\xfe not utf-8", {"Nats-Msg-Id": "bad"})
        r = c.get(f"/notifications/user/10?min_version={last[10]}")
        assert r.status_code == 200 and r.json()["version"] == last[10]
        time.sleep(0.7 if burst % 2 else 0.05)
    for uid, v in last.items():
        c.wait_version(uid, v, timeout=30)
    assert len(c.history()) == 60
    c.wait_metric("consumer_events_dead_lettered_total", 1)
    assert c.get("/notifications?limit=3").status_code == 200
    assert c.get("/notifications/user/3/events").status_code == 200

    env = {"NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "MONGODB_DB": c.dbname,
           "ASAN_OPTIONS": "detect_leaks=1"}
    r = harness.subprocess.run([str(san_bin), "replay"], env=harness.service_env(
                                   env, harness.nats_service_env("notification-consumer", env)),
                               capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not harness.sanitizer_reports(san_bin, r.stderr), r.stderr

    assert c.service.stop(timeout=10) == 0
    log = c.log()
    assert not harness.sanitizer_reports(san_bin, log), log[-3000:]
    assert "stopped" in log
