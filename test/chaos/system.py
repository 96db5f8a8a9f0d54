"""The whole pipeline for failure injection: PostgreSQL, nats-server (one or a 3-server cluster),
FerretDB, user-api, outbox-relay(s) and notification-consumer(s), each on fixed free ports in its
own temporary folder, so that any of them can be SIGKILLed, paused and restarted in place.

Built on test/integration/harness.py (imported through a sys.path insert); nothing here starts a
second kind of server.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import harness  # noqa: E402

BINARIES = ("user-api", "outbox-relay", "notification-consumer", "migrate")
STREAM = "USER_EVENTS"
DURABLE = "notification-consumer"
MONGO_DB = "notifications_db"

# What PostgreSQL committed, kept for the checker: a copy of every outbox row, made by a trigger
# in the transaction that inserts the row, so it exists exactly when the users row and the outbox
# row were committed. Chosen over the load generator's request log, which cannot know the version
# of a request that got no answer (nor see a write nobody asked for), and over the outbox itself,
# whose rows the relay sweeps after RELAY_RETAIN, or the stream, which is the next hop and itself
# under test (it may lose what it acknowledged, and the relay publishes that again). Installed
# by the test only; the product's schema and statements are unchanged. SECURITY DEFINER: the
# services may write the outbox under a role that has no rights on this table.
COMMITTED_TABLE = "chaos_committed"
COMMITTED_SQL = f"""
CREATE TABLE IF NOT EXISTS {COMMITTED_TABLE} (
    event_id     uuid PRIMARY KEY,
    aggregate_id bigint NOT NULL,
    event_type   text NOT NULL,
    version      bigint NOT NULL,
    payload      jsonb NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION {COMMITTED_TABLE}_record() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    INSERT INTO {COMMITTED_TABLE} (event_id, aggregate_id, event_type, version, payload)
    VALUES (NEW.event_id, NEW.aggregate_id, NEW.event_type, NEW.version, NEW.payload);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS {COMMITTED_TABLE} ON outbox;
CREATE TRIGGER {COMMITTED_TABLE} AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION {COMMITTED_TABLE}_record();
"""


def _signal_tree(proc: harness.Process, sig: int):
    """Sends sig to a process and its children (PostgreSQL's backends are not in its group)."""
    pids = [proc.pid] + harness._children(proc.pid)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Node:
    """One process of the system under test, under a short name (api, relay, consumer, ...)."""

    def __init__(self, name: str, proc: harness.Process, kind: str):
        self.name = name
        self.proc = proc
        self.kind = kind          # "service" or "server"
        self.paused = False

    def running(self) -> bool:
        return self.proc.running()

    def kill(self):
        if self.paused:
            self.cont()
        self.proc.kill()

    def start(self, timeout: float = 60.0):
        self.proc.start(wait=True, timeout=timeout)

    def stop(self, timeout: float = 10.0):
        if self.paused:
            self.cont()
        return self.proc.stop(timeout)

    def term(self, limit: float = 10.0) -> tuple[int | None, float]:
        """SIGTERM, as an operator's stop: returns (exit status, seconds until it exited). A process
        still running after limit seconds is SIGKILLed (status -9), as a service manager would."""
        t0 = time.monotonic()
        rc = self.stop(limit)
        return rc, time.monotonic() - t0

    def restart_with(self, env: dict, timeout: float = 60.0):
        """Stops a service with SIGTERM if it runs, lays env over its environment (a value of None
        removes the variable) and starts it again; later restarts keep the change."""
        if self.running():
            self.stop(12)
        for k, v in env.items():
            if v is None:
                self.proc.env.pop(k, None)
            else:
                self.proc.env[k] = str(v)
        self.start(timeout)

    def pause(self):
        _signal_tree(self.proc, signal.SIGSTOP)
        self.paused = True

    def cont(self):
        _signal_tree(self.proc, signal.SIGCONT)
        self.paused = False

    def log_text(self) -> str:
        return self.proc.log_text()

    def __repr__(self):
        return f"<Node {self.name} pid={self.proc.pid}>"


class System:
    """Starts and owns every process; close() kills them all and removes their folders.

    relays/consumers: how many of each; cluster: a 3-server JetStream cluster instead of one
    server (the relay then creates the stream with 3 replicas). failpoints: {node name: FAILPOINTS
    value} armed on the first start of that node only; a restart runs without them.
    extra_env: {node kind: {VAR: value}} laid over the defaults.
    """

    def __init__(self, relays: int = 1, consumers: int = 1, cluster: bool = False,
                 failpoints: dict | None = None, extra_env: dict | None = None,
                 ack_wait: str = "3s"):
        self.nrelays = relays
        self.nconsumers = consumers
        self.cluster = cluster
        self.failpoints = dict(failpoints or {})
        self.extra_env = extra_env or {}
        self.ack_wait = ack_wait
        self.nodes: dict[str, Node] = {}
        self.pg = None
        self.nats = None          # harness.Nats or harness.NatsCluster
        self.ferret = None

    # --- start and stop --------------------------------------------------------------------------

    def start(self):
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self):
        # A binary that is not built fails the run here, loudly, rather than halfway through.
        missing = [b for b in BINARIES if not harness.have_binary(b)]
        if missing:
            raise RuntimeError(f"not built in {harness.bin_dir()}: {', '.join(missing)} (make)")
        self.pg = harness.Postgres(template=harness.Postgres.template(migrated=True))
        if self.cluster:
            self.nats = harness.NatsCluster(3, name="chaos")
        else:
            self.nats = harness.Nats()
        self.ferret = harness.FerretDB()
        # Started side by side, then awaited (a cluster's servers are awaited by NatsCluster).
        self.pg.start(wait=False)
        self.ferret.start(wait=False)
        if self.cluster:
            self.nats.start()
        else:
            self.nats.start(wait=False)
            self.nats.wait_ready()
        self.pg.wait_ready()
        self.ferret.wait_ready()
        with self.pg.connect() as c:
            c.execute(COMMITTED_SQL)
        self.nodes["postgres"] = Node("postgres", self.pg, "server")
        if self.cluster:
            for i, s in enumerate(self.nats.servers):
                self.nodes[f"nats{i}"] = Node(f"nats{i}", s, "server")
        else:
            self.nodes["nats"] = Node("nats", self.nats, "server")
        self.nodes["ferretdb"] = Node("ferretdb", self.ferret, "server")

        for i in range(self.nrelays):
            self._service(f"relay{i}" if self.nrelays > 1 else "relay", "outbox-relay", {
                **self.pg.env, "NATS_URL": self.nats.url,
                "OUTBOX_RELAY_PORT": harness.free_port(), "OUTBOX_RELAY_BIND": "127.0.0.1",
                "RELAY_POLL_MAX": "200ms", "RELAY_LOCK_POLL": "100ms",
                "RELAY_BACKLOG_INTERVAL": "500ms", "RELAY_PUBLISH_TIMEOUT": "2s",
                "RELAY_STREAM_REPLICAS": "3" if self.cluster else "1", "LOG_LEVEL": "info"})
        # The consumer needs the stream, which the leading relay creates.
        self.wait_stream()
        self._service("api", "user-api", {
            **self.pg.env, "NATS_URL": self.nats.url, "USER_API_PORT": harness.free_port(),
            "USER_API_BIND": "127.0.0.1", "USER_API_PG_CONNECTIONS": "4", "LOG_LEVEL": "info"})
        for i in range(self.nconsumers):
            self._service(f"consumer{i}" if self.nconsumers > 1 else "consumer",
                          "notification-consumer", {
                              "NATS_URL": self.nats.url, "MONGODB_URI": self.ferret.uri,
                              "MONGODB_DB": MONGO_DB, "NOTIFICATION_CONSUMER_BIND": "127.0.0.1",
                              "NOTIFICATION_CONSUMER_PORT": harness.free_port(),
                              "CONSUMER_ACK_WAIT": self.ack_wait, "LOG_LEVEL": "info"})
        self.wait_ready(60)

    def _service(self, name: str, binary: str, env: dict):
        env.update(self.extra_env.get(binary, {}))
        fp = self.failpoints.get(name)
        if fp:
            env["FAILPOINTS"] = fp
        svc = harness.Service(binary, env=env)
        node = Node(name, svc, "service")
        self.nodes[name] = node
        svc.start(wait=True)
        if fp:
            # Armed for the first life only: the scenario restarts the process without it.
            del svc.env["FAILPOINTS"]
        return node

    def close(self):
        for n in list(self.nodes.values()):
            if n.paused:
                try:
                    n.cont()
                except Exception:  # noqa: BLE001
                    pass
        for n in reversed(list(self.nodes.values())):
            if n.kind == "service":
                n.proc.close()
        for p in (self.pg, self.nats, self.ferret):
            if p is not None:
                p.close()

    def stop_services(self) -> dict:
        """SIGTERM to every service; returns {name: exit status} (0 is a clean shutdown)."""
        out = {}
        for n in self.nodes.values():
            if n.kind == "service" and n.running():
                out[n.name] = n.stop(12)
        return out

    # --- views -----------------------------------------------------------------------------------

    def services(self, binary: str | None = None) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "service"
                and (binary is None or n.proc.name == binary)]

    @property
    def api_url(self) -> str:
        return self.nodes["api"].proc.url

    def consumer_url(self) -> str:
        return self.services("notification-consumer")[0].proc.url

    def nats_url(self) -> str:
        return self.nats.url

    def ready(self, node: Node) -> bool:
        import requests
        if node.kind != "service" or not node.running():
            return node.running()
        try:
            return requests.get(node.proc.url + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout: float = 60.0):
        """Every process runs and every service answers /readyz 200 (a standby relay is ready)."""
        harness.wait_for(lambda: all(self.ready(n) for n in self.nodes.values()), timeout,
                         0.2, "every process to be ready: " + ", ".join(
                             n.name for n in self.nodes.values() if not self.ready(n)))

    def wait_stream(self, timeout: float = 60.0):
        harness.wait_for(lambda: js_call(self.nats_url(), lambda js: js.stream_info(STREAM)),
                         timeout, 0.2, f"stream {STREAM}")

    def restart_dead(self, timeout: float = 60.0):
        """Starts every process that is not running (a crash point fired, the nemesis killed it)."""
        for n in self.nodes.values():
            if n.paused:
                n.cont()
            if not n.running():
                n.start(timeout)

    def lease_ttl(self) -> float:
        """The consumers' CONSUMER_LEASE_TTL in seconds (the product's default unless set)."""
        v = self.extra_env.get("notification-consumer", {}).get("CONSUMER_LEASE_TTL", "5s")
        return float(v[:-2]) / 1000 if v.endswith("ms") else float(v.rstrip("s"))

    def lease_holder(self) -> Node | None:
        """The consumer process that holds the lease now (its /readyz says "ok" for the consumer
        check; a stand-by names the holder there), or None."""
        import requests
        for n in self.services("notification-consumer"):
            if not n.running() or n.paused:
                continue
            try:
                r = requests.get(n.proc.url + "/readyz", timeout=2)
                if r.json()["checks"]["consumer"] == "ok":
                    return n
            except (requests.RequestException, ValueError, KeyError):
                pass
        return None

    def stream_info(self):
        """nats-py's StreamInfo of USER_EVENTS (config and state)."""
        async def fn(js):
            return await js.stream_info(STREAM)
        return js_call(self.nats_url(), fn)

    def consumer_instances(self) -> dict:
        """{instance id: node name} of every life of every consumer process, from their logs."""
        out = {}
        for n in self.services("notification-consumer"):
            for m in re.finditer(r"instance ([0-9a-f-]{36})", n.log_text()):
                out[m.group(1)] = n.name
        return out

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {n.name} ({n.proc.log_path})\n{n.proc.log_tail(lines)}"
                         for n in self.nodes.values())


def js_call(url: str, fn, timeout: float = 10.0):
    """Runs fn(jetstream context) (a coroutine) on a fresh nats-py connection; returns its result."""
    import nats as nats_py

    async def go():
        nc = await nats_py.connect(url.split(","), connect_timeout=3, allow_reconnect=False,
                                   **harness.nats_admin(),
                                   max_reconnect_attempts=0)
        try:
            return await fn(nc.jetstream(timeout=timeout))
        finally:
            await nc.close()
    return asyncio.run(go())


def consumer_pending(url: str) -> tuple[int, int]:
    """(num_pending, num_ack_pending) of the durable consumer."""
    async def fn(js):
        ci = await js.consumer_info(STREAM, DURABLE)
        return ci.num_pending, ci.num_ack_pending
    return js_call(url, fn)


def read_stream(url: str) -> list[dict]:
    """Every message of USER_EVENTS, in order, as {seq, subject, headers, body (parsed JSON)}."""
    import json
    import uuid as uuidlib
    from nats import errors as nats_errors
    from nats.js import errors as js_errors
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    async def fn(js):
        info = await js.stream_info(STREAM)
        total = info.state.messages
        last = info.state.last_seq
        name = "chaos-checker-" + uuidlib.uuid4().hex[:8]
        sub = await js.pull_subscribe("user.events.>", durable=name, stream=STREAM,
                                      config=ConsumerConfig(ack_policy=AckPolicy.NONE,
                                                            deliver_policy=DeliverPolicy.ALL,
                                                            inactive_threshold=60.0,
                                                            num_replicas=1, mem_storage=True))
        out = []
        try:
            tries = 0
            while len(out) < total:
                try:
                    msgs = await sub.fetch(min(1000, total - len(out)), timeout=5)
                except (js_errors.ServiceUnavailableError, nats_errors.TimeoutError, TimeoutError):
                    # In a cluster the new consumer may not have a leader yet: bounded retries.
                    tries += 1
                    if tries > 20:
                        raise
                    await asyncio.sleep(0.5)
                    continue
                for m in msgs:
                    seq = m.metadata.sequence.stream
                    out.append({"seq": seq, "subject": m.subject, "headers": dict(m.headers or {}),
                                "body": json.loads(m.data)})
                    if seq >= last:
                        break
                if out and out[-1]["seq"] >= last:
                    break
        finally:
            await sub.unsubscribe()
            try:
                await js.delete_consumer(STREAM, name)
            except Exception:  # noqa: BLE001 - it expires by itself
                pass
        return out
    return js_call(url, fn, timeout=20)


def now() -> str:
    return time.strftime("%H:%M:%S")
