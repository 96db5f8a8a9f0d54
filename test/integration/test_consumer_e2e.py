"""End to end: user-api writes PostgreSQL and its outbox, outbox-relay moves the events to
JetStream, notification-consumer applies them to FerretDB; what a client reads on 8081 matches
what it wrote on 8080, and the copy equals PostgreSQL, also after a replay."""
import random
import threading
import time
import uuid

import pytest
import requests

import harness
from test_consumer_support import Consumer, poll, assert_problem

class Stack:
    def __init__(self, db, nats, ferret, services):
        self.db, self.nats, self.ferret, self.services = db, nats, ferret, services
        self.dbname = f"notif_{uuid.uuid4().hex[:8]}"
        pg_env = db.env if isinstance(db.env, dict) else db.env()
        common = dict(pg_env, NATS_URL=nats.url, LOG_LEVEL="info")
        self.relay = services.start("outbox-relay", dict(common, OUTBOX_RELAY_PORT=harness.free_port(),
                                                         OUTBOX_RELAY_BIND="127.0.0.1"))
        self.api = services.start("user-api", dict(common, USER_API_PORT=harness.free_port(),
                                                   USER_API_BIND="127.0.0.1"))
        # The relay creates the stream; the consumer waits for it.
        svc = services.start("notification-consumer", {
            "NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "MONGODB_DB": self.dbname,
            "NOTIFICATION_CONSUMER_PORT": harness.free_port(),
            "NOTIFICATION_CONSUMER_BIND": "127.0.0.1", "LOG_LEVEL": "info"})
        self.consumer = Consumer(svc, ferret, self.dbname)
        poll(lambda: self.consumer.ready().status_code == 200, 30, "consumer ready")

    def call(self, method, path, **kw):
        kw.setdefault("timeout", 15)
        return requests.request(method, self.api.url + path, **kw)

    def users(self):
        """Every user as user-api serves it, by id."""
        out, after = {}, 0
        while True:
            r = self.call("GET", f"/users?limit=1000&after={after}")
            assert r.status_code == 200, r.text
            page = r.json()
            for u in page:
                out[u["id"]] = u
            if "Link" not in r.headers or not page:
                return out
            after = page[-1]["id"]

    def copies(self):
        out, after = {}, 0
        while True:
            r = self.consumer.get(f"/notifications?limit=1000&after={after}")
            assert r.status_code == 200, r.text
            page = r.json()
            for d in page:
                out[d["user_id"]] = d
            if "Link" not in r.headers or not page:
                return out
            after = page[-1]["user_id"]

    def assert_converged(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            users = {i: {"user_id": i, "name": u["name"], "email": u["email"],
                         "updated_at": u["updated_at"], "version": u["version"]}
                     for i, u in self.users().items()}
            copies = self.copies()
            if users == copies:
                break
            if time.monotonic() >= deadline:
                diff = [(i, users.get(i), copies.get(i), self.consumer.doc(i))
                        for i in sorted(set(users) | set(copies)) if users.get(i) != copies.get(i)]
                pytest.fail(f"the copy differs from PostgreSQL for {len(diff)} users: {diff[:5]}")
            time.sleep(0.5)
        # Deleted users: a tombstone in MongoDB, hidden from reads.
        for uid, d in self.consumer.docs().items():
            assert (uid in users) != d["deleted"], d
        return users


@pytest.fixture
def stack(db, nats, ferret, services):
    return Stack(db, nats, ferret, services)


def test_create_update_delete_are_read_back_on_8081(stack):
    r = stack.call("POST", "/users", json={"name": "Ann Lee", "email": f"ann-{uuid.uuid4().hex[:6]}@example.com"})
    assert r.status_code == 201, r.text
    user = r.json()
    uid = user["id"]
    r = stack.consumer.get(f"/notifications/user/{uid}?min_version={user['version']}")
    assert r.status_code == 200, r.text
    assert r.json() == {"user_id": uid, "name": user["name"], "email": user["email"],
                        "updated_at": user["updated_at"], "version": 1}

    r = stack.call("PUT", f"/users/{uid}", json={"name": "Ann Lee-Smith", "email": user["email"]})
    assert r.status_code == 200, r.text
    upd = r.json()
    r = stack.consumer.get(f"/notifications/user/{uid}?min_version=2")
    assert r.status_code == 200
    assert r.json() == {"user_id": uid, "name": "Ann Lee-Smith", "email": user["email"],
                        "updated_at": upd["updated_at"], "version": 2}

    r = stack.call("DELETE", f"/users/{uid}")
    assert r.status_code in (200, 204), r.text
    # The delete is version 3: waiting for it ends in 404, not 504.
    assert_problem(stack.consumer.get(f"/notifications/user/{uid}?min_version=3"), 404)
    # docs/consumer.md: an event's history entry is written right after the copy, so a read that
    # already sees the deletion may come a few milliseconds before /events lists it.
    def entries():
        got = [(h["type"], h["version"]) for h in
               stack.consumer.get(f"/notifications/user/{uid}/events").json()]
        return got if len(got) >= 3 else None
    hist = poll(entries, 5, "the deletion's entry")
    assert hist == [("user_created", 1), ("user_updated", 2), ("user_deleted", 3)]
    # All relayed: the relay removes a batch's rows only after the consumer may have applied it.
    poll(lambda: stack.db.sql("SELECT count(*) FROM outbox_pending")[0][0] == 0, 15, "the outbox to be empty")


def test_copy_equals_postgres_under_concurrent_writes_and_after_replays(stack):
    errors = []
    halt = threading.Event()

    def client(seed):
        rnd = random.Random(seed)
        mine = []
        try:
            while not halt.is_set():
                op = rnd.random()
                if not mine or op < 0.3:
                    r = stack.call("POST", "/users", json={
                        "name": f"user {seed}", "email": f"c{seed}-{uuid.uuid4().hex[:8]}@example.com"})
                    assert r.status_code == 201, r.text
                    mine.append(r.json())
                elif op < 0.9:
                    u = rnd.choice(mine)
                    r = stack.call("PUT", f"/users/{u['id']}", json={"name": f"n{rnd.random():.6f}",
                                                                    "email": u["email"]})
                    assert r.status_code == 200, r.text
                else:
                    u = mine.pop(rnd.randrange(len(mine)))
                    r = stack.call("DELETE", f"/users/{u['id']}")
                    assert r.status_code in (200, 204), r.text
                time.sleep(0.1)  # FerretDB on SQLite applies some tens of events a second
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(3)
    env = {"NATS_URL": stack.nats.url, "MONGODB_URI": stack.ferret.uri, "MONGODB_DB": stack.dbname}
    # Into the live collections, next to the live consumer, then into a fresh one merged in.
    r = harness.run_binary("notification-consumer", "replay", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "dead-lettered 0" in r.stderr
    time.sleep(1)
    r = harness.run_binary("notification-consumer", "replay", "--fresh", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    time.sleep(2)
    halt.set()
    for t in threads:
        t.join(15)
    assert not errors, errors
    users = stack.assert_converged()
    assert len(users) > 10

    # The collections dropped, the live consumer stopped: a replay alone rebuilds the copy.
    assert stack.consumer.service.stop() == 0
    stack.consumer.drop()
    r = harness.run_binary("notification-consumer", "replay", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "dead-lettered 0" in r.stderr
    svc = stack.services.start("notification-consumer", stack.consumer.service.env)
    stack.consumer = Consumer(svc, stack.ferret, stack.dbname)
    stack.assert_converged(timeout=30)
    # Every event in the stream took effect exactly once.
    with stack.ferret.client() as cl:
        hist = list(cl[stack.dbname].user_notification_events.find({}, {"event_id": 1}))
    assert len(hist) == len({h["event_id"] for h in hist})
