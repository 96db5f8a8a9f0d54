"""outbox-relay against real PostgreSQL and nats-server: every committed outbox row reaches the
USER_EVENTS stream at least once, deduplicated, in per-user order, with a hot standby.

Rows are inserted with SQL where the test is about the relay alone, and through bin/user-api for
the end-to-end cases."""
import asyncio
import base64
import json
import os
import re
import signal
import threading
import time
import uuid

import nats
import pytest
import requests

import harness

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


# --- fixtures and helpers of this file -----------------------------------------------------------

def poll(fn, timeout, what, interval=0.05):
    """Calls fn until it returns something truthy (returned); fails after timeout seconds."""
    try:
        return harness.wait_for(fn, timeout=timeout, interval=interval, what=what)
    except TimeoutError as e:
        pytest.fail(str(e))


class Db:
    """A migrated users_db on a PostgreSQL server of the test's own."""

    def __init__(self, pg):
        self.pg = pg
        self.env = pg.env

    def connect(self):
        return self.pg.connect()


def sql(db, query, params=None):
    with db.connect() as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else []


def sql_one(db, query, params=None):
    rows = sql(db, query, params)
    assert len(rows) == 1, rows
    return rows[0]


def outbox_count(db):
    return sql_one(db, "SELECT count(*) FROM outbox")[0]


def insert_rows(db, n, aggregate=None, event_type="user_updated", traceparent=TRACEPARENT, pad=0):
    """Commits n outbox rows in one transaction, as user-api would; returns their event ids in id
    order. The payload carries the event id (test_event_id) to check it arrives untouched."""
    subject = "user.events." + event_type.removeprefix("user_")
    headers = json.dumps({"traceparent": traceparent} if traceparent else {})
    rows = sql(db, "INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, "
                   "headers, payload) "
                   "SELECT e, a, %s, 1, %s, %s::jsonb, jsonb_build_object('test_event_id', e::text, "
                   "'id', a, 'pad', repeat('x', %s)) "
                   "FROM (SELECT gen_random_uuid() AS e, coalesce(%s, g) AS a "
                   "      FROM generate_series(1, %s) g) s "
                   "RETURNING id, event_id::text",
               (event_type, subject, headers, pad, aggregate, n))
    return [r[1] for r in sorted(rows)]


class StreamReader:
    """Reads USER_EVENTS through nats-py: the JetStream API for info and single messages, an
    ordered (ephemeral) consumer for everything."""

    def __init__(self, server):
        self.server = server

    async def _request(self, subject, body=b""):
        nc = await nats.connect(self.server.url, connect_timeout=2, allow_reconnect=False)
        try:
            r = await nc.request(subject, body, timeout=5)
            return json.loads(r.data)
        finally:
            await nc.close()

    def info(self):
        return asyncio.run(self._request("$JS.API.STREAM.INFO.USER_EVENTS"))

    def stream_config(self):
        info = self.info()
        return info.get("config") if "error" not in info else None

    def count(self):
        info = self.info()
        return 0 if "error" in info else info["state"]["messages"]

    def get_msg(self, seq):
        m = asyncio.run(self._request("$JS.API.STREAM.MSG.GET.USER_EVENTS",
                                      json.dumps({"seq": seq}).encode()))["message"]
        headers = {}
        for line in base64.b64decode(m.get("hdrs", "")).decode().split("\r\n")[1:]:
            if ": " in line:
                k, v = line.split(": ", 1)
                headers[k] = v
        return {"subject": m["subject"], "seq": m["seq"], "headers": headers,
                "data": base64.b64decode(m.get("data", "")).decode()}

    async def _all(self, n, timeout):
        nc = await nats.connect(self.server.url, connect_timeout=2, allow_reconnect=False)
        try:
            js = nc.jetstream()
            sub = await js.subscribe("user.events.>", ordered_consumer=True)
            out = []
            deadline = time.monotonic() + timeout
            while len(out) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"read {len(out)} of {n} events from the stream"
                m = await sub.next_msg(timeout=min(left, 5))
                out.append({"subject": m.subject, "seq": m.metadata.sequence.stream,
                            "headers": dict(m.headers or {}), "data": m.data.decode()})
            await sub.unsubscribe()
            return out
        finally:
            await nc.close()

    def read(self, n=None, timeout=60):
        """The first n messages (all there are when n is None), in stream order."""
        return asyncio.run(self._all(self.count() if n is None else n, timeout))


class NatsServer(harness.Nats):
    """The test's nats-server, with the stream reader's methods."""

    def __init__(self):
        super().__init__()
        self.reader = StreamReader(self)

    def stream_config(self):
        return self.reader.stream_config()

    def get_msg(self, seq):
        return self.reader.get_msg(seq)


def read_stream(nats_server, n=None):
    return nats_server.reader.read(n)


def stream_count(nats_server):
    return nats_server.reader.count()


class Relay:
    """A running bin/outbox-relay."""

    def __init__(self, svc):
        self.svc = svc

    def ready(self):
        r = requests.get(self.svc.url + "/readyz", timeout=5)
        body = r.json()
        assert r.status_code == (200 if body["status"] == "ready" else 503), (r.status_code, body)
        return body

    def metrics(self):
        text = requests.get(self.svc.url + "/metrics", timeout=5).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self):
        rc = self.svc.stop(timeout=10)
        assert rc == 0, f"outbox-relay exited {rc} on SIGTERM:\n{self.svc.log_tail()}"
        return rc

    def kill(self):
        return self.svc.kill()

    def wait_exit(self, timeout):
        return self.svc.wait_exit(timeout)

    def process_alive(self):
        return self.svc.running()

    def log(self):
        return self.svc.log_text()


class Relays:
    """Starts relays (and runs the CLI) against the test's database and NATS."""

    def __init__(self, db, nats_server):
        self.db, self.nats = db, nats_server
        self.started = []

    def env(self, **extra):
        env = {**self.db.env, "NATS_URL": self.nats.url, "LOG_LEVEL": "info",
               "RELAY_POLL_MAX": "200ms", "RELAY_LOCK_POLL": "100ms", "RELAY_BACKLOG_INTERVAL": "200ms"}
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, wait_ready=True, **extra):
        env = self.env(OUTBOX_RELAY_PORT=harness.free_port(), OUTBOX_RELAY_BIND="127.0.0.1", **extra)
        svc = harness.Service("outbox-relay", env=env)
        self.started.append(svc)
        svc.start(wait=wait_ready)
        relay = Relay(svc)
        if wait_ready:
            poll(lambda: relay.ready()["checks"]["role"] in ("leader", "standby"), 15,
                 "the relay to lead or stand by")
        return relay

    def run_cli(self, *args, **extra):
        return harness.run_binary("outbox-relay", *args, env=self.env(**extra), timeout=60)

    def stop_all(self):
        for s in self.started:
            s.stop()

    def close(self):
        for s in self.started:
            s.close()


@pytest.fixture
def relay_db():
    pg = harness.Postgres(template=harness.Postgres.template(migrated=True))
    pg.start()
    yield Db(pg)
    pg.close()


@pytest.fixture
def relay_nats():
    n = NatsServer()
    n.start()
    yield n
    n.close()


@pytest.fixture
def relays(relay_db, relay_nats):
    r = Relays(relay_db, relay_nats)
    yield r
    r.close()


class UserApi:
    def __init__(self, svc):
        self.svc = svc

    def request(self, method, path, **kw):
        kw.setdefault("timeout", 15)
        return requests.request(method, self.svc.url + path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def create(self, name):
        r = self.post("/users", json={"name": name, "email": f"u-{uuid.uuid4().hex}@example.com"})
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
def user_api(relay_db, relay_nats):
    env = {**relay_db.env, "NATS_URL": relay_nats.url, "USER_API_PORT": harness.free_port(),
           "USER_API_BIND": "127.0.0.1", "USER_API_THREADS": "4"}
    svc = harness.Service("user-api", env=env)
    svc.start()
    yield UserApi(svc)
    svc.close()


def wait_drained(db, timeout=30):
    poll(lambda: outbox_count(db) == 0, timeout, "the outbox to be empty")


def event_ids(msgs):
    return [m["headers"]["Nats-Msg-Id"] for m in msgs]


def assert_each_once(msgs, expected_ids):
    ids = event_ids(msgs)
    dups = {i for i in ids if ids.count(i) > 1}
    assert not dups, f"events in the stream more than once: {sorted(dups)[:5]}"
    assert set(ids) == set(expected_ids), (
        f"missing {len(set(expected_ids) - set(ids))}, unexpected {len(set(ids) - set(expected_ids))}")


class Writer(threading.Thread):
    """Inserts one outbox row per transaction until stopped; remembers the committed event ids."""

    def __init__(self, db, pause=0.005):
        super().__init__(daemon=True)
        self.db, self.pause = db, pause
        self.ids = []
        self.errors = []
        self.stop_flag = threading.Event()

    def run(self):
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            try:
                self.ids += insert_rows(self.db, 1, aggregate=n)
            except Exception as e:  # noqa: BLE001  (reported by stop())
                self.errors.append(repr(e))
                return
            time.sleep(self.pause)

    def stop(self):
        self.stop_flag.set()
        self.join(10)
        assert not self.errors, self.errors
        return self.ids


# --- the relay on its own ----------------------------------------------------------------------

def test_rows_reach_the_stream_with_subject_headers_and_body(relay_db, relay_nats, relays):
    ids = insert_rows(relay_db, 2, traceparent=TRACEPARENT, event_type="user_updated")
    ids += insert_rows(relay_db, 1, traceparent=None, event_type="user_deleted")
    created = dict(sql(relay_db, "SELECT event_id::text, to_char(created_at AT TIME ZONE 'UTC', "
                                 "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM outbox"))
    relay = relays.start()
    wait_drained(relay_db)

    msgs = read_stream(relay_nats)
    assert event_ids(msgs) == ids  # in outbox id order, once each
    for m, eid in zip(msgs, ids):
        body = json.loads(m["data"])
        assert set(body) == {"type", "event_id", "schema_version", "occurred_at", "payload"}, body
        assert body["event_id"] == eid
        assert body["schema_version"] == 1              # rows that do not say, as old writers wrote them
        assert body["occurred_at"] == created[eid]        # the row's created_at, RFC 3339 UTC
        assert RFC3339_UTC.match(body["occurred_at"]), body["occurred_at"]
        assert m["headers"]["Content-Type"] == "application/json"
        assert body["payload"]["test_event_id"] == eid   # the payload column, untouched
    assert [m["subject"] for m in msgs] == ["user.events.updated"] * 2 + ["user.events.deleted"]
    assert [json.loads(m["data"])["type"] for m in msgs] == ["user_updated"] * 2 + ["user_deleted"]
    assert msgs[0]["headers"]["traceparent"] == TRACEPARENT
    assert "traceparent" not in msgs[2]["headers"]

    metrics = relay.metrics()
    assert metrics["relay_leader"] == 1
    assert metrics["relay_events_published_total"] == 3
    assert relay.ready() == {"status": "ready", "checks": {"postgres": "ok", "nats": "ok",
                                                           "role": "leader"}}
    relay.stop()


def test_stream_is_provisioned_with_the_contract_settings(relay_db, relay_nats, relays):
    relays.start(RELAY_DUPLICATE_WINDOW="90s")
    cfg = poll(lambda: relay_nats.stream_config(), 10, "the stream to exist")
    assert cfg["subjects"] == ["user.events.>"]
    assert cfg["storage"] == "file"
    assert cfg["retention"] == "limits"
    assert cfg["duplicate_window"] == 90 * 10**9
    assert cfg.get("max_age", 0) == 0 and cfg.get("max_bytes", -1) == -1
    relays.stop_all()

    # A restart with other safe settings updates the stream in place and keeps its events.
    insert_rows(relay_db, 3)
    relay = relays.start(RELAY_DUPLICATE_WINDOW="2m", RELAY_STREAM_MAX_BYTES="10485760")
    wait_drained(relay_db)
    cfg = relay_nats.stream_config()
    assert cfg["duplicate_window"] == 120 * 10**9
    assert cfg["max_bytes"] == 10485760
    assert cfg["discard"] == "new"   # a full stream refuses instead of dropping unread events
    assert stream_count(relay_nats) == 3
    relay.stop()
    # A limit can refuse events: the warning that says so at start is itself the behaviour.
    assert any(" warn " in l and "RELAY_STREAM_MAX_BYTES" in l for l in relay.log().splitlines()), \
        relay.log()


def test_existing_stream_with_unsafe_differences_is_reported_not_changed(relay_db, relay_nats, relays):
    created = asyncio.run(relay_nats.reader._request(
        "$JS.API.STREAM.CREATE.USER_EVENTS",
        json.dumps({"name": "USER_EVENTS", "subjects": ["user.events.>"], "storage": "memory",
                    "retention": "limits", "duplicate_window": 30 * 10**9}).encode()))
    assert "error" not in created, created
    ids = insert_rows(relay_db, 3)
    relay = relays.start()
    wait_drained(relay_db)
    cfg = relay_nats.stream_config()
    assert cfg["storage"] == "memory"                       # never recreated behind one's back
    assert cfg["duplicate_window"] == 120 * 10**9           # the safe part was brought in line
    assert event_ids(read_stream(relay_nats)) == ids
    relay.stop()
    # Nothing but the warning reports what was left alone: the log line is the behaviour.
    warnings = [l for l in relay.log().splitlines() if " warn " in l and "USER_EVENTS" in l]
    assert warnings and "storage is memory, wanted file" in warnings[0], relay.log()


def test_replicated_stream_on_a_cluster(relay_db, relays):
    cluster = harness.NatsCluster(3).start()
    try:
        relays.nats = cluster
        ids = insert_rows(relay_db, 10)
        relay = relays.start(RELAY_STREAM_REPLICAS="3")
        wait_drained(relay_db)
        reader = StreamReader(cluster.servers[0])
        cfg = poll(reader.stream_config, 30, "the stream's configuration")
        assert cfg["num_replicas"] == 3
        # Read back one by one (a fresh cluster can be slow to create a consumer).
        got = poll(lambda: [reader.get_msg(seq)["headers"]["Nats-Msg-Id"] for seq in range(1, 11)],
                   30, "the events from the replicated stream")
        assert got == ids
        assert reader.count() == 10
        relay.stop()
    finally:
        cluster.close()


def test_late_commit_of_an_earlier_id_is_still_relayed(relay_db, relay_nats, relays):
    relays.start()
    early = relay_db.connect()      # takes an id now, commits later
    early_id = str(uuid.uuid4())
    early.execute("BEGIN")
    early_row = early.execute(
        "INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, payload) "
        "VALUES (%s, 1, 'user_updated', 1, 'user.events.updated', '{}') RETURNING id",
        (early_id,)).fetchone()[0]
    later = [str(uuid.uuid4())]       # a higher id, committed first
    later_row = sql_one(relay_db,
                        "INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, "
                        "payload) VALUES (%s, 2, 'user_updated', 1, 'user.events.updated', '{}') "
                        "RETURNING id", (later[0],))[0]
    assert later_row > early_row
    poll(lambda: stream_count(relay_nats) == 1, 10, "the later row to be relayed")
    assert event_ids(read_stream(relay_nats)) == later

    early.execute("COMMIT")
    early.close()
    wait_drained(relay_db)
    assert event_ids(read_stream(relay_nats)) == later + [early_id]


def test_killed_between_pubacks_and_commit_republishes_without_duplicates(relay_db, relay_nats,
                                                                          relays):
    ids = insert_rows(relay_db, 50)
    crashing = relays.start(FAILPOINTS="relay.after_acks_before_commit=crash", wait_ready=False)
    assert crashing.wait_exit(15) == -signal.SIGKILL
    # The batch was acknowledged but never committed: the rows are still there, the stream has them.
    assert outbox_count(relay_db) == 50
    assert stream_count(relay_nats) == 50

    relay = relays.start()
    wait_drained(relay_db)
    msgs = read_stream(relay_nats, 50)
    assert_each_once(msgs, ids)
    assert stream_count(relay_nats) == 50           # the republished copies were dropped
    assert relay.metrics()["relay_events_duplicate_total"] == 50
    relay.stop()


def test_killed_with_two_batches_in_flight_loses_nothing(relay_db, relay_nats, relays):
    ids = insert_rows(relay_db, 50)
    # Killed at the commit of the third batch of 10, while the fourth is already claimed.
    crashing = relays.start(FAILPOINTS="relay.after_acks_before_commit=crash@3",
                            RELAY_BATCH_SIZE="10", RELAY_PIPELINE="2", wait_ready=False)
    assert crashing.wait_exit(15) == -signal.SIGKILL
    left = [r[0] for r in sql(relay_db, "SELECT event_id::text FROM outbox ORDER BY id")]
    assert 0 < len(left) < 50
    assert left == ids[50 - len(left):]              # committed in order: the first batches went
    assert stream_count(relay_nats) >= 50 - len(left)

    relay = relays.start()
    wait_drained(relay_db)
    assert_each_once(read_stream(relay_nats, 50), ids)
    assert stream_count(relay_nats) == 50           # the republished copies were dropped
    relay.stop()


def test_failed_batch_is_rolled_back_and_retried(relay_db, relay_nats, relays):
    ids = insert_rows(relay_db, 25)
    relay = relays.start(FAILPOINTS="relay.after_acks_before_commit=error")
    wait_drained(relay_db)
    assert_each_once(read_stream(relay_nats), ids)
    m = relay.metrics()
    assert m["relay_batches_failed_total"] == 1
    assert m["relay_events_duplicate_total"] == 25   # the retry republished what the stream had
    relay.stop()


def test_nats_down_longer_than_the_publish_timeout(relay_db, relay_nats, relays):
    relay = relays.start(RELAY_PUBLISH_TIMEOUT="1s")
    writer = Writer(relay_db)
    writer.start()
    poll(lambda: stream_count(relay_nats) >= 5, 10, "events to flow")

    # Frozen: the connection stays up, publishes go out and no PubAck comes back, so batches time
    # out and must roll back.
    os.kill(relay_nats.pid, signal.SIGSTOP)
    try:
        # A batch times out after RELAY_PUBLISH_TIMEOUT, with writes going on.
        poll(lambda: relay.ready()["status"] == "not ready", 15,
             "/readyz to report the timed-out publishes")
        poll(lambda: outbox_count(relay_db) > 0, 5, "the events to wait in PostgreSQL")
    finally:
        # Then it dies: whatever it had not read yet is gone, and only rows the relay kept can
        # bring those events back.
        relay_nats.kill()
    ready = poll(lambda: (lambda r: r if r["checks"]["nats"] == "not connected" else None)(relay.ready()),
                 10, "/readyz to report NATS")
    assert ready["status"] == "not ready"
    assert relay.metrics()["relay_batches_failed_total"] >= 1
    # The backlog gauges keep being measured while NATS is away.
    waiting = outbox_count(relay_db)
    metrics = poll(lambda: (lambda m: m if m["relay_outbox_backlog"] >= waiting else None)(relay.metrics()),
                   5, "the backlog gauge to show the waiting rows")
    assert metrics["relay_outbox_oldest_age_seconds"] > 0
    time.sleep(1.5)
    relay_nats.start()

    time.sleep(0.5)
    ids = writer.stop()
    wait_drained(relay_db, timeout=30)
    assert_each_once(read_stream(relay_nats, len(ids)), ids)
    assert stream_count(relay_nats) == len(ids)
    assert relay.process_alive()
    relay.stop()


def leader_and_standby(relays):
    """Two relays on one database: the first leads, the second stands by."""
    a = relays.start()
    poll(lambda: a.ready()["checks"]["role"] == "leader", 10, "the first relay to lead")
    b = relays.start()
    poll(lambda: b.ready()["checks"]["role"] == "standby", 10, "the second relay to stand by")
    return a, b


def test_standby_takes_over_when_the_leader_is_killed(relay_db, relay_nats, relays):
    a, b = leader_and_standby(relays)

    writer = Writer(relay_db)
    writer.start()
    poll(lambda: stream_count(relay_nats) >= 20, 10, "events to flow")
    assert b.metrics()["relay_events_published_total"] == 0   # only the leader publishes
    assert b.metrics()["relay_leader"] == 0

    a.kill()
    poll(lambda: b.ready()["checks"]["role"] == "leader", 5, "the standby to take over")
    time.sleep(0.5)
    ids = writer.stop()
    wait_drained(relay_db)
    assert_each_once(read_stream(relay_nats, len(ids)), ids)
    assert b.metrics()["relay_events_published_total"] > 0
    b.stop()


def test_leader_lock_session_cut_stops_and_hands_over(relay_db, relay_nats, relays):
    a, b = leader_and_standby(relays)
    writer = Writer(relay_db)
    writer.start()
    poll(lambda: stream_count(relay_nats) >= 20, 10, "events to flow")

    # Cut the leader's lock session from the server side: the lock goes with it.
    cut = sql(relay_db, "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'outbox-relay leader lock' AND pid IN "
                        "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)")
    assert [c[1] for c in cut] == [True]
    poll(lambda: {a.ready()["checks"]["role"], b.ready()["checks"]["role"]} == {"leader", "standby"}
         and sql_one(relay_db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND granted")[0] == 1,
         10, "one relay to lead again")
    # The cut leader noticed: both relays hold a lock session again, neither the one cut, and only
    # one of them counts itself the leader.
    sessions = [r[0] for r in sql(relay_db, "SELECT pid FROM pg_stat_activity "
                                            "WHERE application_name = 'outbox-relay leader lock'")]
    assert len(sessions) == 2 and cut[0][0] not in sessions, (sessions, cut)
    assert a.metrics()["relay_leader"] + b.metrics()["relay_leader"] == 1
    time.sleep(0.5)
    ids = writer.stop()
    wait_drained(relay_db)
    assert_each_once(read_stream(relay_nats, len(ids)), ids)
    assert stream_count(relay_nats) == len(ids)
    a.stop()
    b.stop()


def test_postgres_restart(relay_db, relay_nats, relays):
    relay = relays.start()
    first = insert_rows(relay_db, 20)
    wait_drained(relay_db)

    relay_db.pg.stop()
    ready = poll(lambda: (lambda r: r if r["checks"]["postgres"] == "unreachable" else None)(relay.ready()),
                 15, "/readyz to report PostgreSQL")
    assert ready["status"] == "not ready"
    relay_db.pg.start()

    second = insert_rows(relay_db, 20)
    wait_drained(relay_db, timeout=30)
    assert_each_once(read_stream(relay_nats, 40), first + second)
    assert stream_count(relay_nats) == 40
    poll(lambda: relay.ready()["status"] == "ready", 10, "the relay to be ready again")
    relay.stop()


def test_backlog_of_20000_rows_drains(relay_db, relay_nats, relays):
    ids = insert_rows(relay_db, 20000)
    relay = relays.start()
    wait_drained(relay_db, timeout=90)
    assert stream_count(relay_nats) == 20000
    # Spot checks at both ends and the middle: right event, right order.
    for seq in (1, 10000, 20000):
        assert relay_nats.get_msg(seq)["headers"]["Nats-Msg-Id"] == ids[seq - 1]
    assert relay.metrics()["relay_events_published_total"] == 20000
    relay.stop()


@pytest.mark.parametrize("pipeline", ["1", "2", "3"])
def test_backlog_of_many_batches_reaches_the_stream_in_id_order(relay_db, relay_nats, relays,
                                                                 pipeline):
    # Committed in several transactions, as many writers would; 60 batches of 50.
    ids = []
    for _ in range(6):
        ids += insert_rows(relay_db, 500)
    relay = relays.start(RELAY_BATCH_SIZE="50", RELAY_PIPELINE=pipeline)
    wait_drained(relay_db, timeout=60)
    msgs = read_stream(relay_nats, len(ids))
    assert stream_count(relay_nats) == len(ids)
    got = event_ids(msgs)
    assert_each_once(msgs, ids)
    assert got == ids, next(f"stream position {i}: {g} where the outbox has {e}"
                            for i, (g, e) in enumerate(zip(got, ids)) if g != e)
    m = relay.metrics()
    assert m["relay_events_published_total"] == len(ids)
    assert m["relay_batches_failed_total"] == 0
    assert "still open" not in relay.log()
    relay.stop()


def relay_open_transactions(db):
    """The relay's work sessions that sit in an open transaction."""
    return sql_one(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                       "'outbox-relay' AND state LIKE 'idle in transaction%%'")[0]


@pytest.mark.parametrize("failpoint", ["relay.after_publish_before_acks",
                                       "relay.after_acks_before_commit",
                                       "relay.commit_sent_before_result"])
def test_failed_batch_in_the_pipeline_loses_nothing_and_leaves_no_transaction_open(
        relay_db, relay_nats, relays, failpoint):
    ids = []
    for _ in range(4):
        ids += insert_rows(relay_db, 500)
    # The third batch fails while the fourth is already claimed and the second in flight.
    relay = relays.start(RELAY_BATCH_SIZE="100", RELAY_PIPELINE="3",
                         FAILPOINTS=f"{failpoint}=error@3")
    wait_drained(relay_db, timeout=60)
    assert_each_once(read_stream(relay_nats, len(ids)), ids)
    assert stream_count(relay_nats) == len(ids)      # the republished copies were dropped
    m = relay.metrics()
    assert m["relay_batches_failed_total"] == 1
    # A commit whose answer was lost with the connection may have gone through: the relay cannot
    # know, so that batch of 100 is either republished (and counted) or not counted at all.
    uncounted = 100 if failpoint == "relay.commit_sent_before_result" else 0
    assert m["relay_events_published_total"] >= len(ids) - uncounted
    # Every batch ended by its own commit or rollback: none was left open for a later claim (only
    # the error line of the claim that has to roll one back would tell).
    assert "still open" not in relay.log()
    poll(lambda: relay.ready()["status"] == "ready", 10, "the relay to be ready again")
    # Idle again: none of the relay's sessions holds a transaction (and so no row locks).
    for _ in range(5):
        assert relay_open_transactions(relay_db) == 0
        time.sleep(0.1)
    relay.stop()


def test_oversized_row_goes_to_the_dead_table(relay_db, relay_nats, relays):
    before = insert_rows(relay_db, 2)
    huge = insert_rows(relay_db, 1, pad=1_200_000)   # over nats-server's default 1 MiB max_payload
    after = insert_rows(relay_db, 2)
    relay = relays.start()
    wait_drained(relay_db)

    assert event_ids(read_stream(relay_nats, 4)) == before + after
    assert stream_count(relay_nats) == 4
    dead = sql(relay_db, "SELECT event_id::text, reason FROM outbox_dead")
    assert [d[0] for d in dead] == huge
    assert "maximum payload" in dead[0][1]
    assert relay.metrics()["relay_events_dead_total"] == 1
    relay.stop()
    assert huge[0] in relay.log()   # the log line names the event


def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(relay_db, relay_nats, relays):
    ids = insert_rows(relay_db, 30)
    relay = relays.start(FAILPOINTS="relay.after_acks_before_commit=pause(1500)")
    # Held after the PubAcks: every event in the stream, every row still in the outbox.
    poll(lambda: stream_count(relay_nats) == 30 and outbox_count(relay_db) == 30, 10,
         "the relay to hold a published batch")
    os.kill(relay.svc.pid, signal.SIGTERM)
    assert relay.wait_exit(10) == 0
    # The batch in hand was committed, not abandoned: nothing left to republish.
    assert outbox_count(relay_db) == 0
    assert_each_once(read_stream(relay_nats), ids)
    poll(lambda: sql_one(relay_db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0] == 0,
         5, "the leader lock to be released")


# --- snapshot -----------------------------------------------------------------------------------

def test_snapshot_emits_one_event_per_user_and_resumes(relay_db, relay_nats, relays):
    sql(relay_db, "INSERT INTO users (name, email, version) "
                  "SELECT 'user ' || g, 'u' || g || '@example.com', g % 3 + 1 "
                  "FROM generate_series(1, 25) g")
    users = sql(relay_db, "SELECT id, name, email, version FROM users ORDER BY id")

    r = relays.run_cli("snapshot", "--batch", "10")
    assert r.returncode == 0, r.stderr
    written, last = map(int, r.stdout.split())
    assert (written, last) == (25, users[-1][0])
    assert "25 events written" in r.stderr

    relay = relays.start()
    wait_drained(relay_db)
    msgs = read_stream(relay_nats, 25)
    assert {m["subject"] for m in msgs} == {"user.events.snapshot"}
    got = {}
    for m in msgs:
        body = json.loads(m["data"])
        assert body["type"] == "user_snapshot"
        p = body["payload"]
        got[p["id"]] = (p["id"], p["name"], p["email"], p["version"])
        assert RFC3339_UTC.match(p["updated_at"])
    assert got == {u[0]: tuple(u) for u in users}   # one event per user, full state
    relay.stop()

    # Resumable: --after the 20th user writes the last 5 only.
    r = relays.run_cli("snapshot", "--after", str(users[19][0]), "--batch", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["5", str(users[-1][0])]
    assert sql(relay_db, "SELECT aggregate_id FROM outbox ORDER BY id") == [(u[0],) for u in users[20:]]

    bad = relays.run_cli("snapshot", "--after", "x")
    assert bad.returncode == 2 and "invalid --after" in bad.stderr


def test_cli_help_version_check(relays):
    r = relays.run_cli("--help")
    assert r.returncode == 0 and "RELAY_BATCH_SIZE" in r.stdout and "snapshot" in r.stdout
    r = relays.run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("outbox-relay ")
    r = relays.run_cli("--check", RELAY_BATCH_SIZE="0")
    assert r.returncode == 2 and "RELAY_BATCH_SIZE" in r.stderr
    r = relays.run_cli("--check")
    assert r.returncode == 0 and "RELAY_DUPLICATE_WINDOW=120000ms" in r.stdout


# --- end to end through user-api ----------------------------------------------------------------

def test_create_update_delete_through_user_api(relay_db, relay_nats, relays, user_api):
    relays.start()
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = user_api.post("/users", json={"name": "Ada", "email": f"ada-{uuid.uuid4().hex}@example.com"},
                      headers={"traceparent": tp})
    assert r.status_code == 201, r.text
    user = r.json()
    r = user_api.put(f"/users/{user['id']}", json={"name": "Ada L", "email": user["email"]})
    assert r.status_code == 200, r.text
    r = user_api.delete(f"/users/{user['id']}")
    assert r.status_code in (200, 204), r.text
    wait_drained(relay_db)

    msgs = read_stream(relay_nats, 3)
    assert stream_count(relay_nats) == 3
    assert [m["subject"] for m in msgs] == ["user.events.created", "user.events.updated",
                                            "user.events.deleted"]
    bodies = [json.loads(m["data"]) for m in msgs]
    assert [b["type"] for b in bodies] == ["user_created", "user_updated", "user_deleted"]
    assert [b["payload"]["version"] for b in bodies] == [1, 2, 3]
    assert [b["payload"]["name"] for b in bodies] == ["Ada", "Ada L", "Ada L"]
    assert [b["payload"]["deleted"] for b in bodies] == [False, False, True]
    for m, b in zip(msgs, bodies):
        assert b["schema_version"] == 2     # what user-api writes now (common/event_contract.h)
        assert b["payload"]["id"] == user["id"]
        assert b["payload"]["email"] == user["email"]
        assert m["headers"]["Nats-Msg-Id"] == b["event_id"]
        assert m["headers"]["Content-Type"] == "application/json"
        assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", m["headers"]["traceparent"])
        assert RFC3339_UTC.match(b["occurred_at"]) and RFC3339_UTC.match(b["payload"]["updated_at"])
    assert msgs[0]["headers"]["traceparent"].split("-")[1] == tp.split("-")[1]  # carried from HTTP


def test_nudge_wakes_an_idle_relay(relay_db, relay_nats, relays, user_api):
    # Polling every 60 s: only user-api's nudge can bring the event over within the wait below.
    relay = relays.start(RELAY_POLL_MIN="60s", RELAY_POLL_MAX="60s")
    poll(lambda: relay.metrics().get("relay_outbox_backlog") == 0, 10, "the relay to be idle")
    time.sleep(0.5)
    user = user_api.create("Nudged")
    msgs = poll(lambda: read_stream(relay_nats) or None, 10, "the event to reach the stream")
    assert json.loads(msgs[0]["data"])["payload"]["id"] == user["id"]
    relay.stop()


def test_per_user_order_under_concurrent_load(relay_db, relay_nats, relays, user_api):
    relays.start(RELAY_BATCH_SIZE="50")
    hot = user_api.create("Hot")
    others = [user_api.create(f"Other {i}") for i in range(4)]
    errors = []

    def update(u, n):
        for i in range(n):
            r = user_api.put(f"/users/{u['id']}", json={"name": f"{u['name']} {i}", "email": u["email"]})
            if r.status_code != 200:
                errors.append((r.status_code, r.text))

    threads = [threading.Thread(target=update, args=(hot, 100)) for _ in range(2)]
    threads += [threading.Thread(target=update, args=(o, 50)) for o in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    wait_drained(relay_db)

    total = 5 + 200 + 4 * 50
    msgs = read_stream(relay_nats, total)
    assert stream_count(relay_nats) == total
    versions = [json.loads(m["data"])["payload"]["version"] for m in msgs
                if json.loads(m["data"])["payload"]["id"] == hot["id"]]
    assert versions == list(range(1, 202)), versions[:20]
