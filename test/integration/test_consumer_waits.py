"""Reads that wait for a version (GET /notifications/user/{id}?min_version=N) against a real
nats-server and FerretDB: they hold no HTTP worker thread, so 500 of them leave the read API
answering; the apply path answers them when the version arrives; beyond CONSUMER_MAX_WAITERS a
read is refused with 503 and Retry-After; the deadline answers 504; SIGTERM answers those still
waiting with 503 and the process exits 0.

The waiting requests are raw HTTP/1.1 on their own sockets, read with one selector: the client
costs a socket per request, not a thread."""
import json
import selectors
import socket
import threading
import time

import pytest
import requests

from test_consumer_support import *  # noqa: F401,F403
from test_consumer_support import Stream, make_event, start_consumer, expected_doc, poll, \
    assert_problem

# Room for 500 waiting sockets from one address (the default allows 64 per address).
MANY = {"NOTIFICATION_CONSUMER_MAX_CONNECTIONS_PER_IP": 1000, "CONSUMER_READ_WAIT_MAX": "60s"}


@pytest.fixture
def stream(nats):
    s = Stream(nats)
    s.create()
    return s


class Answer:
    def __init__(self, raw: bytes):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1]) if lines and lines[0] else 0
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:200]!r}>"


class Waits:
    """One raw GET per path, each on its own socket, sent at once and left open (Connection:
    close, so an answer ends at EOF)."""

    def __init__(self, port, paths):
        self.sel = selectors.DefaultSelector()
        self.socks = []
        self.raw = {}
        self.started = time.monotonic()
        for i, path in enumerate(paths):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      f"X-Request-Id: wait-{i}\r\n\r\n".encode())
            s.setblocking(False)
            self.socks.append(s)
            self.raw[s] = b""
            self.sel.register(s, selectors.EVENT_READ)

    def answered(self) -> int:
        """How many of the requests have an answer (or part of one) to read now; reads nothing."""
        return len(self.sel.select(timeout=0))

    def answers(self, timeout) -> list[Answer]:
        """Reads every answer to its end, in the order of the paths; fails after timeout."""
        deadline = time.monotonic() + timeout
        open_ = len(self.sel.get_map())
        while open_:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{open_} of {len(self.socks)} waiting reads got no full answer "
                            f"within {timeout}s")
            for key, _ in self.sel.select(timeout=min(left, 1.0)):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data:
                    self.raw[s] += data
                else:
                    self.sel.unregister(s)
                    open_ -= 1
        return [Answer(self.raw[s]) for s in self.socks]

    def close(self):
        for s in self.socks:
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.sel.close()


def waiting(c, n, timeout=20):
    c.wait_metric("consumer_read_waiters", n, timeout=timeout)


def test_500_waiting_reads_hold_no_thread_and_are_answered_by_the_apply(nats, ferret, services,
                                                                        stream):
    c = start_consumer(services, nats, ferret, **MANY)
    evs = [make_event("user_created", 1, 1), make_event("user_created", 2, 1)]
    stream.publish(evs)
    c.wait_events(evs)            # both users are listed below
    waits = Waits(c.service.port, ["/notifications/user/1?min_version=2&wait=60s"] * 500)
    try:
        # With a worker thread held per waiting read (16 of them), this read queued behind
        # the waits and got no answer before they ended.
        try:
            r = c.get("/notifications", timeout=20)
        except requests.Timeout:
            pytest.fail("GET /notifications got no answer while 500 reads waited")
        assert r.status_code == 200 and [d["user_id"] for d in r.json()] == [1, 2]
        assert waits.answered() == 0

        waiting(c, 500)
        # All 500 are suspended now: the read API still answers, and none of them was answered.
        r = c.get("/notifications")
        assert r.status_code == 200 and len(r.json()) == 2
        assert c.get("/notifications/user/2").json()["version"] == 1
        assert c.get("/notifications/user/1?min_version=1").json()["version"] == 1
        assert waits.answered() == 0
        assert c.metric("consumer_read_waits_refused_total") == 0

        late = make_event("user_updated", 1, 2)
        stream.publish([late])
        answers = waits.answers(timeout=30)
    finally:
        waits.close()
    assert sorted({a.status for a in answers}) == [200], answers[:3]
    for a in answers:
        assert a.json() == expected_doc(late[4]) and a.headers["etag"] == '"2"', a
    waiting(c, 0)
    assert c.metric("http_requests_total{route=\"/notifications/user/{}\",method=\"GET\","
                    "code=\"200\"}") >= 500


def test_beyond_max_waiters_a_read_gets_503_with_retry_after(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret, CONSUMER_MAX_WAITERS=5, **MANY)
    stream.publish([make_event("user_created", 1, 1)])
    c.wait_version(1, 1)
    waits = Waits(c.service.port, ["/notifications/user/1?min_version=2&wait=30s"] * 5)
    try:
        waiting(c, 5)
        r = c.get("/notifications/user/1?min_version=2&wait=30s")
        body = assert_problem(r, 503)
        assert r.headers["Retry-After"] == "1"
        assert body["min_version"] == 2 and body["version"] == 1, body
        assert "CONSUMER_MAX_WAITERS" in body["detail"], body
        assert c.metric("consumer_read_waits_refused_total") == 1
        # A read that needs no wait is answered as always, full or not.
        assert c.get("/notifications/user/1?min_version=1").json()["version"] == 1
        assert c.metric("consumer_read_waiters") == 5
        assert waits.answered() == 0

        late = make_event("user_updated", 1, 2)
        stream.publish([late])
        answers = waits.answers(timeout=20)
    finally:
        waits.close()
    assert [a.status for a in answers] == [200] * 5, answers
    assert all(a.json() == expected_doc(late[4]) for a in answers)
    waiting(c, 0)
    # Room again: the next read waits (here in vain, for a version that does not come).
    assert_problem(c.get("/notifications/user/1?min_version=3&wait=200ms"), 504)
    assert c.metric("consumer_read_waits_refused_total") == 1


def test_deadline_answers_504_and_the_others_wait_on(nats, ferret, services, stream):
    c = start_consumer(services, nats, ferret, **MANY)
    evs = [make_event("user_created", 1, 1), make_event("user_created", 2, 1)]
    stream.publish(evs)
    c.wait_events(evs)            # the short waits below find user 1 at version 1
    short = Waits(c.service.port, [f"/notifications/user/1?min_version=3&wait={300 + 20 * i}ms"
                                   for i in range(20)])
    long_ = Waits(c.service.port, ["/notifications/user/1?min_version=2&wait=30s",
                                   "/notifications/user/2?min_version=2&wait=30s"])
    try:
        answers = short.answers(timeout=20)
        elapsed = time.monotonic() - short.started
        for a in answers:
            assert a.status == 504 and a.headers["content-type"].startswith(
                "application/problem+json"), a
            assert a.headers["retry-after"] == "1"
            body = a.json()
            assert body["version"] == 1 and body["min_version"] == 3, body
        # None before its own wait was over (the last one waited 680ms).
        assert elapsed >= 0.68
        # The deadline of one read answers that read only.
        waiting(c, 2)
        assert long_.answered() == 0

        v2 = make_event("user_updated", 1, 2)
        gone = make_event("user_deleted", 2, 2)
        stream.publish([v2, gone])
        first, second = long_.answers(timeout=20)
    finally:
        short.close()
        long_.close()
    assert first.status == 200 and first.json() == expected_doc(v2[4])
    # Deleted at the version waited for: 404, as a read without a wait.
    assert second.status == 404 and second.headers["content-type"].startswith(
        "application/problem+json"), second
    waiting(c, 0)
    assert c.metric("consumer_read_waits_refused_total") == 0


def test_a_standby_answers_waiting_reads_from_the_leaders_writes(nats, ferret, services, stream):
    """A stand-by applies nothing, so its waiting reads are answered by its recheck of the copy
    (CONSUMER_WAIT_RECHECK), not by an apply of its own."""
    a = start_consumer(services, nats, ferret)
    poll(lambda: a.ready().json()["checks"]["consumer"] == "ok", 15, "the leader")
    b = start_consumer(services, nats, ferret, dbname=a.dbname, **MANY)
    poll(lambda: b.ready().json()["checks"]["consumer"].startswith("standby"), 15, "a stand-by")
    stream.publish([make_event("user_created", 1, 1)])
    b.wait_version(1, 1)
    waits = Waits(b.service.port, ["/notifications/user/1?min_version=2&wait=30s"] * 50)
    try:
        waiting(b, 50)
        late = make_event("user_updated", 1, 2)
        stream.publish([late])
        answers = waits.answers(timeout=20)
    finally:
        waits.close()
    assert [a_.status for a_ in answers] == [200] * 50, answers[:3]
    assert all(a_.json() == expected_doc(late[4]) for a_ in answers)
    assert " applied " not in b.log()


def test_reads_racing_the_writes_each_get_their_version(nats, ferret, services, stream):
    """Reads that start while the versions they wait for are being applied: whichever comes
    first, the read or the write, each read answers 200 with its version or a later one (none
    sleeps until its deadline because the write came between its read and its wait)."""
    c = start_consumer(services, nats, ferret, **MANY)
    stream.publish([make_event("user_created", 1, 1)])
    c.wait_version(1, 1)
    top = 40
    publisher = threading.Thread(target=lambda: [stream.publish([make_event("user_updated", 1, v)])
                                                  for v in range(2, top + 1)])
    publisher.start()
    batches = []
    try:
        for v in range(2, top + 1):
            batches.append((v, Waits(c.service.port, [f"/notifications/user/1?min_version={v}"
                                                      f"&wait=20s"] * 5)))
        publisher.join()
        for v, waits in batches:
            for a in waits.answers(timeout=10):
                assert a.status == 200 and a.json()["version"] >= v, (v, a)
    finally:
        publisher.join()
        for _, waits in batches:
            waits.close()
    waiting(c, 0)


def test_a_version_applied_between_the_read_and_the_wait_is_not_missed(nats, ferret, services,
                                                                       stream):
    """The failpoint holds the first waiting read between its read of the copy (version 1) and
    its place among the waiters, while version 2 is applied: the apply finds nobody to wake. The
    read checks the copy again once in place and answers at once, instead of sleeping until its
    deadline (60s here)."""
    c = start_consumer(services, nats, ferret,
                       FAILPOINTS="consumer.read_before_wait=pause(1500)@1", **MANY)
    stream.publish([make_event("user_created", 1, 1)])
    c.wait_version(1, 1)
    waits = Waits(c.service.port, ["/notifications/user/1?min_version=2&wait=60s"])
    try:
        late = make_event("user_updated", 1, 2)
        stream.publish([late])
        c.wait_version(1, 2)
        assert c.metric("consumer_read_waiters") == 0  # still held by the failpoint
        answer, = waits.answers(timeout=15)
    finally:
        waits.close()
    assert answer.status == 200 and answer.json() == expected_doc(late[4]), answer
    waiting(c, 0)


def test_a_read_that_waits_longer_than_the_request_deadline_is_not_cut_off(nats, ferret, services,
                                                                          stream):
    """The request deadline (NOTIFICATION_CONSUMER_REQUEST_TIMEOUT, here 2 s) bounds a request's
    arrival: a read whose request is whole and that waits for its version (suspended) is not a
    slow client, however long it waits."""
    c = start_consumer(services, nats, ferret, NOTIFICATION_CONSUMER_REQUEST_TIMEOUT="2s", **MANY)
    stream.publish([make_event("user_created", 1, 1)])
    c.wait_version(1, 1)
    waits = Waits(c.service.port, ["/notifications/user/1?min_version=2&wait=15s"])
    try:
        waiting(c, 1)
        time.sleep(5)               # past the deadline and many sweeps of it
        assert waits.answered() == 0, "the waiting read's connection was closed"
        late = make_event("user_updated", 1, 2)
        stream.publish([late])
        (answer,) = waits.answers(timeout=20)
    finally:
        waits.close()
    assert answer.status == 200 and answer.json() == expected_doc(late[4]), answer
    assert c.metric('http_requests_cut_off_total{phase="headers"}') == 0
    assert c.metric('http_requests_cut_off_total{phase="body"}') == 0


def test_sigterm_answers_the_waiting_reads_503_and_exits_0(nats, ferret, services, stream):
    """Every way a wait ends, in one life of the process, then SIGTERM with 200 reads waiting:
    they are answered 503 and the process exits 0 (on a sanitizer build: without a leak)."""
    c = start_consumer(services, nats, ferret, CONSUMER_MAX_WAITERS=200, **MANY)
    stream.publish([make_event("user_created", 1, 1)])
    c.wait_version(1, 1)
    reached = Waits(c.service.port, ["/notifications/user/1?min_version=2&wait=30s"] * 10)
    try:
        waiting(c, 10)
        stream.publish([make_event("user_updated", 1, 2)])
        assert [a.status for a in reached.answers(timeout=20)] == [200] * 10
    finally:
        reached.close()
    assert_problem(c.get("/notifications/user/1?min_version=3&wait=100ms"), 504)

    waits = Waits(c.service.port, ["/notifications/user/1?min_version=3&wait=60s"] * 200)
    try:
        waiting(c, 200)
        assert_problem(c.get("/notifications/user/1?min_version=3"), 503)
        started = time.monotonic()
        rc = c.service.stop(timeout=10)
        answers = waits.answers(timeout=5)
    finally:
        waits.close()
    assert rc == 0, c.service.log_tail()
    assert time.monotonic() - started < 10
    for a in answers:
        assert a.status == 503 and a.headers["retry-after"] == "1", a
        assert a.headers["content-type"].startswith("application/problem+json"), a
        body = a.json()
        assert "shutting down" in body["detail"] and body["min_version"] == 3, body
    log = c.log()
    assert "stopped" in log
    assert "suspended" not in log  # none was left suspended for libmicrohttpd to abort on
