"""Failure injection beyond single crashes, bounded for `make test`: nats-server away for more
reconnect attempts than nats.c's default budget, two relays whose leader keeps being killed, two
consumer processes on one durable, and a three-server JetStream cluster losing one server, then
another. Each ends with the checker of test/chaos under concurrent writes through user-api."""
import collections
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

import harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))

from checker import check as chaos_check  # noqa: E402
from load import LoadGen  # noqa: E402
from system import MONGO_DB, STREAM, System, js_call  # noqa: E402
from test_chaos import finish as chaos_finish  # noqa: E402

SEED = int(os.environ.get("CHAOS_SEED") or 4242)
# nats.c's default: natsOptions_SetMaxReconnect 60 (then the connection is closed for good).
NATS_C_DEFAULT_MAX_RECONNECT = 60


@pytest.fixture
def systems():
    made = []

    def make(**kw):
        s = System(**kw).start()
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def finish(system, load, kills=0, pauses=0):
    # Two relays, two consumers or a cluster take longer to drain than one of each.
    return chaos_finish(system, load, kills=kills, pauses=pauses, drain_timeout=90)


# --- NATS down longer than the default reconnect budget ---------------------------------------

def _socket_owner(peer_port: int, pids: dict) -> str | None:
    """Which of pids ({pid: name}) owns the client end 127.0.0.1:peer_port of a connection."""
    want = f"0100007F:{peer_port:04X}"
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1] == want:
                inode = cols[9]
                break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid, name in pids.items():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return name
                except OSError:
                    pass
        except OSError:
            pass
    return None


class RefusingNats(threading.Thread):
    """Listens on the NATS port while nats-server is down, accepts every connection and closes it
    at once: to a client each is one failed reconnect attempt. Counts them per process."""

    def __init__(self, port: int, pids: dict):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.pids = pids
        self.attempts = {name: 0 for name in pids.values()}
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            owner = _socket_owner(peer[1], self.pids)
            if owner:
                self.attempts[owner] += 1
            conn.close()
        self.sock.close()

    def stop(self):
        self.stopping.set()
        self.join(5)


def test_nats_down_beyond_the_default_reconnect_budget(systems):
    """Every process keeps reconnecting after more failed attempts than nats.c's default budget
    (60), and the writes made meanwhile reach MongoDB once NATS is back. The outage is counted in
    attempts, not seconds: with the product's reconnect wait (250 ms) 60 attempts pass in about
    20 s, where the default 2 s wait would need 2 minutes."""
    system = systems()
    nats = system.nodes["nats"]
    load = LoadGen(system.api_url, threads=3, seed=SEED, rate=8).start()
    load.wait_ok(10, 30)
    clients = {n.proc.pid: n.name for n in system.services()}
    nats.kill()
    refuser = RefusingNats(system.nats.port, clients)
    refuser.start()
    try:
        harness.wait_for(lambda: min(refuser.attempts.values()) > NATS_C_DEFAULT_MAX_RECONNECT + 5,
                         90, 0.5, f"every client to try more than {NATS_C_DEFAULT_MAX_RECONNECT} "
                         f"times: {refuser.attempts}")
        # Meanwhile the relay says why it is not ready, and the writes are kept in the outbox.
        r = requests.get(system.nodes["relay"].proc.url + "/readyz", timeout=5)
        assert r.status_code == 503, r.text
        assert system.pg.sql("SELECT count(*) FROM outbox_pending")[0][0] > 0
    finally:
        refuser.stop()
    print("failed reconnect attempts while NATS was away:", refuser.attempts)
    nats.start()
    for n in system.services():
        assert n.running(), f"{n.name} exited while NATS was away:\n{n.proc.log_tail()}"
    load.wait_ok(len(load.ops) // 2 + 10, 30)
    rep = finish(system, load, kills=1)
    assert rep.passed, rep.text()
    for n in system.services():
        assert "nats: reconnected" in n.log_text(), f"{n.name} did not reconnect:\n{n.proc.log_tail()}"


# --- two relays, leader kills ----------------------------------------------------------------

def leader(system):
    for n in system.services("outbox-relay"):
        try:
            if requests.get(n.proc.url + "/readyz", timeout=2).json()["checks"]["role"] == "leader":
                return n
        except (requests.RequestException, ValueError, KeyError):
            pass
    return None


def test_two_relays_leader_killed_again_and_again(systems):
    system = systems(relays=2)
    load = LoadGen(system.api_url, threads=4, seed=SEED, rate=15).start()
    load.wait_ok(10, 30)
    kills = 0
    for _ in range(4):
        lead = harness.wait_for(lambda: leader(system), 15, 0.1, "a leading relay")
        time.sleep(1.0)
        lead.kill()
        kills += 1
        # The standby takes over while the old leader is down.
        harness.wait_for(lambda: (leader(system) or lead) is not lead, 15, 0.1, "the standby to lead")
        lead.start()
    rep = finish(system, load, kills=kills)
    assert rep.passed, rep.text()


# --- two consumer processes on one durable --------------------------------------------------------

def two_consumers_on_a_backlog(systems, **kw):
    """Two consumer processes started together on a waiting backlog of few users written often,
    so that both would take batches holding events of the same users; returns (system, load,
    the consumer nodes)."""
    system = systems(consumers=2, **kw)
    consumers = system.services("notification-consumer")
    for c in consumers:
        c.stop()
    load = LoadGen(system.api_url, threads=4, seed=SEED, rate=60, max_users=1).start()
    load.wait_ok(200, 60)
    load.stop()
    for c in consumers:
        c.proc.start(wait=False)
    for c in consumers:
        c.proc.wait_ready()
    return system, load, consumers


def appliers(system) -> collections.Counter:
    """{consumer node name: applied history entries} from the applied_by of each entry."""
    names = system.consumer_instances()
    with system.ferret.client() as c:
        return collections.Counter(
            names.get(h.get("applied_by"), f"unknown {h.get('applied_by')}")
            for h in c[MONGO_DB].user_notification_events.find({"superseded": {"$ne": True}}))


def test_two_consumer_processes_keep_one_writer_per_user(systems):
    """Two consumer processes on the durable. One writer per user must hold: the checker finds no
    two processes applying one user at overlapping times (two_writers, from the process that
    each history entry names), every version applied once and in order, the copy equal to
    PostgreSQL. (Before the consumer's lease, commit f786f0c, both applied.)"""
    system, load, consumers = two_consumers_on_a_backlog(systems)
    rep = finish(system, load)
    by = appliers(system)
    print("applied by each consumer process:", dict(by))
    assert rep.figures["two_writers"] == 0, rep.text()
    assert rep.figures["out_of_order"] == 0 and rep.figures["double"] == 0, rep.text()
    assert rep.passed, rep.text()
    # The rule had something to judge: every applied entry names one of the two processes.
    assert set(by) <= {c.name for c in consumers} and sum(by.values()) == rep.figures["applied"], by


def test_two_consumer_processes_without_the_lease_are_caught(systems):
    """The same two processes with the lease bypassed (the test-only failpoint
    consumer.apply_without_lease): both apply, and the checker must say so. This is what makes
    the test above able to fail."""
    system, load, consumers = two_consumers_on_a_backlog(systems, extra_env={
        "notification-consumer": {"FAILPOINTS": "consumer.apply_without_lease=on",
                                  "CONSUMER_BATCH": "16"}})
    rep = chaos_check(system, load.ops, drain_timeout=90)
    print(rep.text())
    by = appliers(system)
    print("applied by each consumer process:", dict(by))
    assert all(by[c.name] > 0 for c in consumers), by
    assert not rep.passed
    assert rep.figures["two_writers"] > 0, rep.text()
    assert "two_writers: user " in rep.text()


def test_two_consumer_processes_each_killed_in_turn_under_writes(systems):
    """Two consumer processes under writes; each is SIGKILLed in turn and restarted, so the work
    has to move from one to the other (a stand-by taking over, or the other puller). Nothing may
    be lost or applied twice."""
    system = systems(consumers=2)
    consumers = system.services("notification-consumer")
    load = LoadGen(system.api_url, threads=4, seed=SEED, rate=15, max_users=3).start()
    load.wait_ok(20, 30)
    for c in consumers:
        c.kill()
        time.sleep(4)          # longer than the ack wait (3 s): held messages go to the other
        c.start()
        load.wait_ok(len(load.ops) + 15, 30)
    rep = finish(system, load, kills=2)
    assert rep.passed, rep.text()


# --- three-server JetStream cluster, stream replicated 3 times -------------------------------------

def test_cluster_loses_one_server_then_another_under_writes(systems):
    system = systems(cluster=True)
    load = LoadGen(system.api_url, threads=4, seed=SEED, rate=10).start()
    load.wait_ok(10, 30)
    kills = 0
    for name in ("nats0", "nats1"):
        node = system.nodes[name]
        node.kill()
        kills += 1
        time.sleep(3)
        node.start()
        # Back and caught up: nats-server's /healthz is 200 only once its streams are current.
        harness.wait_for(lambda: requests.get(node.proc.monitor_url + "/healthz",
                                              timeout=2).status_code == 200, 60, 0.3,
                         f"{name} healthy again")
        time.sleep(2)
    rep = finish(system, load, kills=kills)
    assert rep.passed, rep.text()
    async def replicas(js):
        return (await js.stream_info(STREAM)).config.num_replicas
    assert js_call(system.nats_url(), replicas) == 3
