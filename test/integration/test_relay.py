"""outbox-relay against real PostgreSQL and nats-server: every committed outbox row reaches the
USER_EVENTS stream at least once, deduplicated, in per-user order, with a hot standby.

Rows are inserted with SQL where the test is about the relay alone, and through bin/user-api for
the end-to-end cases."""
import asyncio
import base64
import json
import os
import re
import shutil
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


def pending_count(db):
    """Rows not published yet (the view migrations/0007 made for readers like this one)."""
    return sql_one(db, "SELECT count(*) FROM outbox_pending")[0]


def kept_count(db):
    """Published rows the relay keeps for RELAY_RETAIN."""
    return sql_one(db, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")[0]


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
        nc = await nats.connect(self.server.url, connect_timeout=2, allow_reconnect=False,
                                 **self.server.client_options())
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
        nc = await nats.connect(self.server.url, connect_timeout=2, allow_reconnect=False,
                                 **self.server.client_options())
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

    def metric(self, name, **labels):
        """One series of /metrics, its labels given as keywords; 0 when it is not there."""
        series = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
                         if labels else "")
        for line in requests.get(self.svc.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

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
           "USER_API_BIND": "127.0.0.1", "USER_API_PG_CONNECTIONS": "4"}
    svc = harness.Service("user-api", env=env)
    svc.start()
    yield UserApi(svc)
    svc.close()


def wait_drained(db, timeout=30):
    poll(lambda: pending_count(db) == 0, timeout, "every outbox row to be published")


def js_api(server, what, body=None):
    """A JetStream API request ($JS.API.<what>) to the test's server; returns its answer."""
    data = json.dumps(body).encode() if body is not None else b""
    return asyncio.run(server.reader._request(f"$JS.API.{what}", data))


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
    # The relay's port takes X-Request-Id as every port does (test_http_conventions.py).
    r = requests.get(relay.svc.url + "/healthz", headers={"X-Request-Id": "relay-1"}, timeout=5)
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "relay-1", r.headers
    r = requests.get(relay.svc.url + "/metrics", headers={"X-Request-Id": "r" * 65}, timeout=5)
    assert r.status_code == 400 and r.json()["field"] == "X-Request-Id", r.text
    relay.stop()


def test_stream_is_provisioned_with_the_contract_settings(relay_db, relay_nats, relays):
    relays.start(RELAY_DUPLICATE_WINDOW="90s")
    cfg = poll(lambda: relay_nats.stream_config(), 10, "the stream to exist")
    assert cfg["subjects"] == ["user.events.>"]
    assert cfg["storage"] == "file"
    assert cfg["retention"] == "limits"
    assert cfg["duplicate_window"] == 90 * 10**9
    # No limit by default: nothing unread is ever dropped (DESIGN.md; docs/relay.md, Retention).
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
    assert pending_count(relay_db) == 50
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
    left = [r[0] for r in sql(relay_db, "SELECT event_id::text FROM outbox_pending ORDER BY id")]
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
        poll(lambda: pending_count(relay_db) > 0, 5, "the events to wait in PostgreSQL")
    finally:
        # Then it dies: whatever it had not read yet is gone, and only rows the relay kept can
        # bring those events back.
        relay_nats.kill()
    ready = poll(lambda: (lambda r: r if r["checks"]["nats"] == "not connected" else None)(relay.ready()),
                 10, "/readyz to report NATS")
    assert ready["status"] == "not ready"
    assert relay.metrics()["relay_batches_failed_total"] >= 1
    # The backlog gauges keep being measured while NATS is away.
    waiting = pending_count(relay_db)
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

    def sessions():
        return [r[0] for r in sql(relay_db, "SELECT pid FROM pg_stat_activity "
                                            "WHERE application_name = 'outbox-relay leader lock'")]
    # The cut leader notices (at its next step, which can take a while when a batch waits for its
    # PubAcks): both relays hold a lock session again, neither the one cut, one lock is granted,
    # and only one of them counts itself the leader. Polled as a whole: right after the cut the
    # standby may already lead while the cut one still says "leader" without a session.
    poll(lambda: {a.ready()["checks"]["role"], b.ready()["checks"]["role"]} == {"leader", "standby"}
         and sql_one(relay_db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND granted")[0] == 1
         and len(sessions()) == 2,
         10, "one relay to lead again")
    assert cut[0][0] not in sessions(), (sessions(), cut)
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
    poll(lambda: stream_count(relay_nats) == 30 and pending_count(relay_db) == 30, 10,
         "the relay to hold a published batch")
    os.kill(relay.svc.pid, signal.SIGTERM)
    assert relay.wait_exit(10) == 0
    # The batch in hand was committed, not abandoned: nothing left to republish.
    assert pending_count(relay_db) == 0
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
    assert sql(relay_db, "SELECT aggregate_id FROM outbox_pending ORDER BY id") == \
        [(u[0],) for u in users[20:]]

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
    # A deletion carries no personal data (docs/events.md, schema version 3).
    assert [b["payload"].get("name") for b in bodies] == ["Ada", "Ada L", None]
    assert [b["payload"]["deleted"] for b in bodies] == [False, False, True]
    assert "email" not in bodies[2]["payload"]
    for m, b in zip(msgs, bodies):
        assert b["schema_version"] == 3     # what user-api writes now (common/event_contract.h)
        assert b["payload"]["id"] == user["id"]
        assert b["payload"].get("email", user["email"]) == user["email"]
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


def test_nudges_of_a_burst_of_commits_are_merged(relay_db, relay_nats, user_api):
    """README: the nudges of a burst of commits are merged, at most one every 5 ms. Every commit
    asks for one (sent, merged into one not yet sent, or skipped while NATS is away), and a burst
    sends far fewer than its commits."""
    def nudges():
        text = user_api.request("GET", "/metrics").text
        out = {}
        for line in text.splitlines():
            if line.startswith("outbox_nudges_total{"):
                out[line.split('result="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
        return out

    before = nudges()
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [user_api.create("Burst") for _ in range(25)])
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    took = time.monotonic() - started
    time.sleep(0.1)   # the last nudge asked for is sent within 5 ms
    after = nudges()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("sent", "merged", "skipped")}
    assert sum(delta.values()) == 200, delta
    assert delta["merged"] > 0, delta
    assert delta["sent"] <= took / 0.005 + 2, (delta, took)


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


# --- kept rows, the sweep, and the stream watch -------------------------------------------------

# A short duplicate window and frequent checks, and rows kept long enough that none is swept
# during the test (unless it says otherwise).
WATCH = {"RELAY_DUPLICATE_WINDOW": "1s", "RELAY_RETAIN": "60s", "RELAY_STREAM_CHECK_INTERVAL": "300ms"}


def log_lines(relay, *words):
    """The lines of the relay's log that hold every one of words."""
    return [l for l in relay.log().splitlines() if all(w in l for w in words)]


def test_published_rows_are_marked_kept_and_swept_after_retain(relay_db, relay_nats, relays):
    ids = insert_rows(relay_db, 30)
    relay = relays.start(RELAY_DUPLICATE_WINDOW="1s", RELAY_RETAIN="3s",
                         RELAY_STREAM_CHECK_INTERVAL="300ms")
    wait_drained(relay_db)
    published = time.monotonic()
    # Kept, not deleted: each row says at which stream sequence its event is, and since when.
    rows = sql(relay_db, "SELECT event_id::text, published_seq, published_at FROM outbox ORDER BY id")
    assert [r[0] for r in rows] == ids
    for eid, seq, at in rows:
        assert at is not None
        assert relay_nats.get_msg(seq)["headers"]["Nats-Msg-Id"] == eid
    m = poll(lambda: (lambda m: m if m["relay_outbox_retained"] == 30 else None)(relay.metrics()),
             5, "the retained gauge")
    assert m["relay_outbox_backlog"] == 0              # the backlog counts waiting rows only
    assert m["relay_outbox_oldest_age_seconds"] == 0
    assert m["relay_outbox_retained_oldest_age_seconds"] > 0
    assert m["relay_events_swept_total"] == 0

    # Swept once RELAY_RETAIN has passed, not before; the stream keeps its events.
    poll(lambda: kept_count(relay_db) == 0, 10, "the published rows to be swept")
    assert time.monotonic() - published > 2.5
    m = relay.metrics()
    assert m["relay_events_swept_total"] == 30
    assert stream_count(relay_nats) == 30
    poll(lambda: relay.metrics()["relay_outbox_retained"] == 0, 5, "the retained gauge to fall")
    relay.stop()


# The test's own record, written as its owner (SECURITY DEFINER): the relay's role may not.
SWEEP_LOG = """
CREATE TABLE sweep_log (txid bigint, deleted int);
CREATE FUNCTION sweep_log() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO sweep_log SELECT txid_current(), count(*) FROM gone;
    RETURN NULL;
END $$;
CREATE TRIGGER sweep_log AFTER DELETE ON outbox REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION sweep_log();
"""


def test_sweep_deletes_in_bounded_batches_and_keeps_younger_rows(relay_db, relay_nats, relays):
    old = insert_rows(relay_db, 2000)
    young = insert_rows(relay_db, 50)
    relay = relays.start(**WATCH)
    wait_drained(relay_db)
    relay.stop()
    # As if the first 2,000 were published an hour ago; every statement that deletes outbox rows
    # is recorded with its transaction and how many it deleted.
    sql(relay_db, "UPDATE outbox SET published_at = published_at - interval '1 hour' "
                  "WHERE event_id = ANY(%s::uuid[])", (old,))
    sql(relay_db, SWEEP_LOG)

    relay = relays.start(RELAY_SWEEP_BATCH="100", **WATCH)
    poll(lambda: kept_count(relay_db) == 50, 20, "the old rows to be swept")
    time.sleep(1.5)   # more sweeps, which must find nothing
    assert sorted(r[0] for r in sql(relay_db, "SELECT event_id::text FROM outbox")) == sorted(young)
    log = sql(relay_db, "SELECT txid, deleted FROM sweep_log WHERE deleted > 0")
    assert sum(d for _, d in log) == 2000
    assert max(d for _, d in log) <= 100                 # bounded batches
    assert len(log) >= 20 and len({t for t, _ in log}) == len(log)   # each its own transaction
    assert relay.metrics()["relay_events_swept_total"] == 2000
    assert stream_count(relay_nats) == 2050
    relay.stop()


def test_the_claim_reads_only_the_waiting_rows(relay_db, relay_nats, relays):
    insert_rows(relay_db, 20000)
    relay = relays.start(**WATCH)
    wait_drained(relay_db, timeout=90)
    relay.stop()
    assert kept_count(relay_db) == 20000
    # Vacuumed, as autovacuum would (the entries the marking left dead in the index are gone):
    # the steady state, which published rows kept do not change.
    sql(relay_db, "VACUUM ANALYZE outbox")
    relay = relays.start(**WATCH)
    sql(relay_db, "SELECT pg_stat_reset()")
    later = insert_rows(relay_db, 10)
    wait_drained(relay_db)
    assert stream_count(relay_nats) == 20010
    assert relay.metrics()["relay_events_published_total"] == 10   # none of the kept rows again
    assert event_ids(read_stream(relay_nats))[-10:] == later
    # The claims went through the index of waiting rows, and read a few of its entries rather
    # than stepping over the 20,000 published rows.

    def pending_index():
        rows = sql(relay_db, "SELECT idx_scan, idx_tup_read FROM pg_stat_user_indexes "
                             "WHERE indexrelname = 'outbox_pending_id'")
        return rows[0] if rows and rows[0][0] > 0 else None
    scans, read = poll(pending_index, 5, "the statistics of the waiting rows' index")
    assert read < 1000, (scans, read)
    relay.stop()


def test_stream_purged_under_the_relay_is_restored(relay_db, relay_nats, relays):
    ids = insert_rows(relay_db, 40)
    relay = relays.start(**WATCH)
    wait_drained(relay_db)
    assert stream_count(relay_nats) == 40
    assert js_api(relay_nats, "STREAM.PURGE.USER_EVENTS").get("success"), "purge"
    assert stream_count(relay_nats) == 0
    more = insert_rows(relay_db, 10)          # writes go on meanwhile

    poll(lambda: relay.metric("relay_events_restored_total") == 40, 20, "the 40 events restored")
    wait_drained(relay_db)
    poll(lambda: stream_count(relay_nats) == 50, 10, "every event back in the stream")
    assert_each_once(read_stream(relay_nats), ids + more)
    assert relay.metric("relay_stream_restores_total", reason="purged") == 1
    assert relay.metric("relay_stream_gap_events") == 0
    lines = log_lines(relay, "restored 40 events", "purged")
    assert len(lines) == 1, relay.log()
    # Published within the duplicate window before the purge, they were held back until JetStream
    # forgot their ids (it drops them as duplicates until then), and the log said so.
    assert " warn " in lines[0] and "first sequence" in lines[0] and " 41" in lines[0], lines[0]
    assert len(log_lines(relay, "no longer holds 40 kept events", "duplicate window")) <= 1
    # Published again: every row kept, at the sequence its event has now.
    for eid, seq in sql(relay_db, "SELECT event_id::text, published_seq FROM outbox"):
        assert relay_nats.get_msg(seq)["headers"]["Nats-Msg-Id"] == eid
    relay.stop()


def test_stream_deleted_under_the_relay_is_created_again_and_restored(relay_db, relay_nats, relays):
    ids = insert_rows(relay_db, 40)
    relay = relays.start(**WATCH)
    wait_drained(relay_db)
    assert js_api(relay_nats, "STREAM.DELETE.USER_EVENTS").get("success"), "delete"

    poll(lambda: relay.metric("relay_events_restored_total") == 40, 20, "the 40 events restored")
    wait_drained(relay_db)
    poll(lambda: stream_count(relay_nats) == 40, 10, "every event back in the stream")
    assert_each_once(read_stream(relay_nats), ids)
    assert relay.metric("relay_stream_restores_total", reason="missing") == 1
    assert len(log_lines(relay, "restored 40 events", "the stream was missing")) == 1, relay.log()
    relay.stop()


def test_stream_recreated_with_other_settings_while_the_relay_was_away_is_restored(
        relay_db, relay_nats, relays):
    ids = insert_rows(relay_db, 25)
    relay = relays.start(**WATCH)
    wait_drained(relay_db)
    relay.stop()
    # Deleted and made again by someone else, with another duplicate window and two events of
    # its own: the relay learns it from the creation time it recorded, not from the sequences.
    assert js_api(relay_nats, "STREAM.DELETE.USER_EVENTS").get("success")
    made = js_api(relay_nats, "STREAM.CREATE.USER_EVENTS",
                  {"name": "USER_EVENTS", "subjects": ["user.events.>"], "storage": "file",
                   "retention": "limits", "duplicate_window": 30 * 10**9})
    assert "error" not in made, made
    asyncio.run(_publish_foreign(relay_nats, 30))

    relay = relays.start(**WATCH)
    poll(lambda: relay.metric("relay_events_restored_total") == 25, 20, "the 25 events restored")
    wait_drained(relay_db)
    poll(lambda: stream_count(relay_nats) == 55, 10, "every event back in the stream")
    assert_each_once([m for m in read_stream(relay_nats) if m["headers"].get("Nats-Msg-Id")], ids)
    assert relay.metric("relay_stream_restores_total", reason="recreated") == 1
    assert len(log_lines(relay, "restored 25 events", "deleted and created anew")) == 1, relay.log()
    # Its settings were brought in line where that is safe, and the log says so.
    assert relay_nats.stream_config()["duplicate_window"] == 10**9
    assert log_lines(relay, "updated stream", "duplicate window 30000ms -> 1000ms"), relay.log()
    relay.stop()


async def _publish_foreign(server, n):
    """n messages without a Nats-Msg-Id, as another publisher would write them."""
    nc = await nats.connect(server.url, connect_timeout=2, allow_reconnect=False,
                             **server.client_options())
    try:
        js = nc.jetstream()
        for i in range(n):
            await js.publish("user.events.other", f"{i}".encode())
    finally:
        await nc.close()


def test_stream_that_went_back_to_an_older_store_is_restored(relay_db, relay_nats, relays):
    relay = relays.start(**WATCH)
    first = insert_rows(relay_db, 20)
    wait_drained(relay_db)
    relay_nats.stop()
    older = relay_nats.dir / "store-older"
    shutil.copytree(relay_nats.store, older)
    relay_nats.start()
    second = insert_rows(relay_db, 30)
    wait_drained(relay_db)
    assert stream_count(relay_nats) == 50

    # The server dies and comes back from a store that lost its last 30 events, as a disk that
    # had not synced them would; writes go on all along, so new events can take the sequences the
    # lost ones had before the relay looks.
    writer = Writer(relay_db)
    writer.start()
    relay_nats.kill()
    shutil.rmtree(relay_nats.store)
    shutil.copytree(older, relay_nats.store)
    time.sleep(0.5)
    relay_nats.start()
    poll(lambda: relay.metric("relay_events_restored_total") >= 30, 20, "the lost events restored")
    time.sleep(0.5)
    later = writer.stop()
    wait_drained(relay_db)
    everything = first + second + later
    poll(lambda: stream_count(relay_nats) == len(everything), 15, "every event in the stream")
    assert_each_once(read_stream(relay_nats), everything)
    assert relay.metric("relay_stream_restores_total", reason="went_back") >= 1
    assert relay.metric("relay_stream_gap_events") == 0
    lines = log_lines(relay, "restored", "the stream went back to sequence")
    assert lines and " warn " in lines[0], relay.log()
    relay.stop()


def test_loss_older_than_the_kept_rows_is_reported_as_a_gap(relay_db, relay_nats, relays):
    # Without a MaxAge: under one, what left the stream's start cannot be told from what aged out.
    relay = relays.start(RELAY_DUPLICATE_WINDOW="1s", RELAY_RETAIN="3s",
                         RELAY_STREAM_CHECK_INTERVAL="300ms", RELAY_STREAM_MAX_AGE="0")
    old = insert_rows(relay_db, 20)
    wait_drained(relay_db)
    poll(lambda: kept_count(relay_db) == 0, 15, "the first rows to be swept")
    kept = insert_rows(relay_db, 10)
    wait_drained(relay_db)
    assert js_api(relay_nats, "STREAM.PURGE.USER_EVENTS").get("success")

    poll(lambda: relay.metric("relay_stream_gap_events") == 20, 15, "the gap to be reported")
    poll(lambda: relay.metric("relay_events_restored_total") == 10, 15, "the kept rows restored")
    poll(lambda: stream_count(relay_nats) == 10, 10, "the kept events back in the stream")
    assert_each_once(read_stream(relay_nats), kept)
    errors = log_lines(relay, " error ", "sequences 1-20 (20 events)")
    assert len(errors) == 1, relay.log()
    assert "outbox-relay snapshot" in errors[0] and "RELAY_RETAIN" in errors[0], errors[0]
    relay.stop()
    assert old


def test_sealed_stream_refuses_without_losing_a_row_or_spinning(relay_db, relay_nats, relays):
    first = insert_rows(relay_db, 5)
    relay = relays.start(**WATCH)
    wait_drained(relay_db)
    cfg = relay_nats.stream_config()
    sealed = js_api(relay_nats, "STREAM.UPDATE.USER_EVENTS", {**cfg, "sealed": True})
    assert "error" not in sealed, sealed
    more = insert_rows(relay_db, 10)

    poll(lambda: relay.metric("relay_stream_refusals_total", reason="sealed") >= 1, 10,
         "the refusal to be counted")
    failed = relay.metrics()["relay_batches_failed_total"]
    time.sleep(3)
    # Backing off, not spinning: a handful of attempts in 3 s, and nothing lost.
    assert relay.metrics()["relay_batches_failed_total"] - failed <= 8
    assert pending_count(relay_db) == 10
    ready = relay.ready()
    assert ready["status"] == "not ready" and "sealed" in ready["checks"]["problem"], ready
    assert log_lines(relay, " error ", "is sealed: it takes no more events"), relay.log()
    assert log_lines(relay, "invalid operation on sealed stream", "the stream is sealed"), relay.log()

    # Replaced: the relay creates it anew and publishes everything kept and waiting, once each.
    assert js_api(relay_nats, "STREAM.DELETE.USER_EVENTS").get("success")
    wait_drained(relay_db)
    poll(lambda: stream_count(relay_nats) == 15, 15, "every event in the new stream")
    assert_each_once(read_stream(relay_nats), first + more)
    poll(lambda: relay.ready()["status"] == "ready", 10, "the relay to be ready again")
    relay.stop()


def test_max_age_shorter_than_the_duplicate_window_is_refused(relays):
    r = relays.run_cli("--check", RELAY_STREAM_MAX_AGE="1m")
    assert r.returncode == 2 and "RELAY_STREAM_MAX_AGE" in r.stderr and \
        "RELAY_DUPLICATE_WINDOW" in r.stderr, r.stderr
    r = relays.run_cli("--check", RELAY_STREAM_MAX_AGE="168h")
    assert r.returncode == 0 and "RELAY_STREAM_MAX_AGE=604800000ms" in r.stdout, r.stdout


def test_retain_shorter_than_the_duplicate_window_is_refused(relays):
    r = relays.run_cli("--check", RELAY_RETAIN="1m")
    assert r.returncode == 2 and "RELAY_RETAIN" in r.stderr and "RELAY_DUPLICATE_WINDOW" in r.stderr
    r = relays.run_cli("--check", RELAY_RETAIN="2m", RELAY_DUPLICATE_WINDOW="2m")
    assert r.returncode == 2 and "RELAY_RETAIN" in r.stderr
    r = relays.run_cli("--check")
    assert r.returncode == 0 and "RELAY_RETAIN=300000ms" in r.stdout
