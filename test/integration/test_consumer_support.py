"""Helpers of the notification-consumer tests (no tests here): events published on JetStream
exactly as the relay publishes them, a running bin/notification-consumer, and reads of its copy
through HTTP and through MongoDB. Import with `from test_consumer_support import *`."""
import asyncio
import datetime
import json
import time
import uuid

import nats as nats_py
import pytest
import requests
from nats.js.api import StorageType, StreamConfig

import harness

__all__ = ["Stream", "Consumer", "make_event", "now_rfc3339", "poll", "TRACEPARENT",
           "expected_doc", "start_consumer", "assert_problem"]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SUBJECTS = {"user_created": "user.events.created", "user_updated": "user.events.updated",
            "user_deleted": "user.events.deleted", "user_snapshot": "user.events.snapshot"}


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_event(kind, uid, version, name=None, email=None, event_id=None):
    """(subject, body bytes, headers, event_id, payload) of one event as the relay builds it."""
    event_id = event_id or str(uuid.uuid4())
    payload = {"id": uid, "name": name or f"user {uid} v{version}",
               "email": email or f"u{uid}-v{version}@example.com", "version": version,
               "updated_at": now_rfc3339(), "deleted": kind == "user_deleted"}
    body = {"type": kind, "event_id": event_id, "schema_version": 2, "occurred_at": now_rfc3339(),
            "payload": payload}
    headers = {"Nats-Msg-Id": event_id, "Content-Type": "application/json",
               "traceparent": TRACEPARENT}
    return SUBJECTS[kind], json.dumps(body).encode(), headers, event_id, payload


def expected_doc(payload):
    """The read API's answer for a user whose last applied event carried payload."""
    return {"user_id": payload["id"], "name": payload["name"], "email": payload["email"],
            "updated_at": payload["updated_at"], "version": payload["version"]}


def poll(fn, timeout, what, interval=0.1):
    """Calls fn until it returns something truthy (returned) or timeout seconds passed (fail)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except (requests.RequestException, AssertionError) as e:  # not there yet
            last = e
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def assert_problem(r, status):
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers.get("Content-Type", "").startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["detail"], body
    return body


class Stream:
    """USER_EVENTS and USER_EVENTS_DLQ on a harness.Nats, through nats-py (a connection per call)."""

    def __init__(self, server):
        self.url = server.url
        self.options = server.client_options()

    def _run(self, fn):
        async def go():
            nc = await nats_py.connect(self.url, connect_timeout=3, allow_reconnect=False,
                                      **self.options)
            try:
                return await fn(nc, nc.jetstream(timeout=10))
            finally:
                await nc.close()
        return asyncio.run(go())

    def create(self):
        """The stream as the relay creates it: file storage, 2 min duplicate window, no limits."""
        async def fn(nc, js):
            await js.add_stream(StreamConfig(name="USER_EVENTS", subjects=["user.events.>"],
                                             storage=StorageType.FILE, duplicate_window=120.0))
        self._run(fn)

    def publish(self, events):
        """Publishes [(subject, body, headers, ...)] in order; returns the PubAcks' sequences
        (a duplicate inside the window returns the first one's sequence)."""
        async def fn(nc, js):
            seqs = []
            for ev in events:
                ack = await js.publish(ev[0], ev[1], headers=ev[2])
                seqs.append(ack.seq)
            return seqs
        return self._run(fn)

    def publish_raw(self, subject, body, headers=None):
        return self.publish([(subject, body, headers or {})])[0]

    def messages(self, stream):
        """Every message of stream as (subject, data bytes, headers dict), in order."""
        async def fn(nc, js):
            try:
                info = await js.stream_info(stream)
            except nats_py.js.errors.NotFoundError:
                return []
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                if info.state.messages == 0:
                    break
                m = await js.get_msg(stream, seq)
                out.append((m.subject, m.data, m.headers or {}))
            return out
        return self._run(fn)

    def consumer_info(self, name="notification-consumer"):
        async def fn(nc, js):
            return await js.consumer_info("USER_EVENTS", name)
        return self._run(fn)

    def delete_consumer(self, name="notification-consumer"):
        async def fn(nc, js):
            return await js.delete_consumer("USER_EVENTS", name)
        return self._run(fn)

    def stream_names(self):
        async def fn(nc, js):
            return [s.config.name for s in await js.streams_info()]
        return self._run(fn)


class Consumer:
    """A bin/notification-consumer (harness.Service) and its MongoDB database."""

    def __init__(self, service, ferret, dbname):
        self.service = service
        self.ferret = ferret
        self.dbname = dbname
        self.base = service.url

    def get(self, path, **kw):
        kw.setdefault("timeout", 15)
        return requests.get(self.base + path, **kw)

    def user(self, uid):
        r = self.get(f"/notifications/user/{uid}")
        return r.json() if r.status_code == 200 else None

    def wait_version(self, uid, version, timeout=20):
        """Waits until the copy of uid is at version (deleted users count through Mongo) and its
        history holds that version: a lane writes the documents first and their history entries
        next, so a test reading the history right after the document would race the second."""
        def there():
            if (self.doc(uid) or {}).get("version") != version:
                return False
            with self.ferret.client() as c:
                return self._db(c).user_notification_events.find_one(
                    {"user_id": uid, "version": version}) is not None
        return poll(there, timeout, f"user {uid} at version {version}, with its history entry")

    def wait_events(self, events, timeout=20):
        """Waits until every user of events (make_event() tuples) is at its highest version
        there: the lanes apply different users in no fixed order, so one user's version says
        nothing of another's."""
        top = {}
        for ev in events:
            top[ev[4]["id"]] = max(top.get(ev[4]["id"], 0), ev[4]["version"])
        for uid, version in top.items():
            self.wait_version(uid, version, timeout)

    def ready(self):
        return self.get("/readyz", timeout=5)

    def wait_metric(self, name, value, timeout=10):
        """Waits until metric name equals value: counters move right after the write that a
        test waits for, when the ack came back."""
        poll(lambda: self.metric(name) == value, timeout, f"{name} == {value}")

    def metric(self, name):
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    # MongoDB, read directly
    def _db(self, client):
        return client[self.dbname]

    def doc(self, uid):
        with self.ferret.client() as c:
            return self._db(c).user_notifications.find_one({"_id": uid})

    def docs(self):
        with self.ferret.client() as c:
            return {d["_id"]: d for d in self._db(c).user_notifications.find()}

    def history(self, uid=None):
        with self.ferret.client() as c:
            q = {} if uid is None else {"user_id": uid}
            return list(self._db(c).user_notification_events.find(q).sort("version", 1))

    def drop(self):
        with self.ferret.client() as c:
            self._db(c).user_notifications.drop()
            self._db(c).user_notification_events.drop()

    def log(self):
        return self.service.log_text()


def consumer_env(nats_server, ferret, dbname, **extra):
    env = {"NATS_URL": nats_server.url, "MONGODB_URI": ferret.uri, "MONGODB_DB": dbname,
           "NOTIFICATION_CONSUMER_PORT": harness.free_port(),
           "NOTIFICATION_CONSUMER_BIND": "127.0.0.1", "LOG_LEVEL": "info"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_consumer(services, nats_server, ferret, dbname=None, wait_ready=True, binary=None,
                   **extra):
    """Starts bin/notification-consumer (or binary) on a free port; waits for /readyz unless
    told not to. extra: more environment (CONSUMER_*, FAILPOINTS...)."""
    dbname = dbname or f"notif_{uuid.uuid4().hex[:8]}"
    env = consumer_env(nats_server, ferret, dbname, **extra)
    kw = {"binary": binary} if binary else {}
    svc = services.start("notification-consumer", env, **kw)
    c = Consumer(svc, ferret, dbname)
    if wait_ready:
        poll(lambda: c.ready().status_code == 200, 20, "consumer ready")
    return c
