#!/usr/bin/env python3
"""Failure injection: starts the whole pipeline on free ports, runs concurrent writers through
user-api while a seeded nemesis faults a random target every 1-5 s, then stops the faults, lets
the system drain and runs the checker. Ends with one line of figures; exits 1 if anything was
lost, applied twice or any check failed.

Targets and what the nemesis does to them (docs/failure-injection.md, "The nemesis"):
  api, relay, consumer    SIGKILL (restarted after 0-2 s), SIGSTOP longer than the ack wait then
                          SIGCONT, or SIGTERM (exit 0 within 10 s required, then restarted)
  nats                    SIGKILL or SIGSTOP
  postgres, ferretdb      SIGKILL of the server and its children
  lease                   the consumer holding the lease SIGSTOPped with messages in hand, longer
                          than the lease TTL, while the stand-by takes over (needs --consumers 2)
  window                  a relay crash after its PubAcks, restarted after the duplicate window
  full                    the stream made full (RELAY_STREAM_MAX_BYTES), then raised again
  rollback                nats-server SIGKILLed and started on a copy of its store taken a moment
                          before: the stream lost events it had acknowledged (one server only)
  purge, delete           the stream purged, or deleted (its durable consumer with it), under
                          the relay

  test/chaos/chaos.py [--duration S] [--seed N] [--threads N] [--rate R] [--targets a,b,...]
                      [--relays N] [--consumers N] [--cluster] [--duplicate-window S]
  make chaos DURATION=600 SEED=1234          # the long soak
  BIN_DIR=bin-san test/chaos/chaos.py ...    # the sanitizer build (make chaos SAN=1)

Replay: every run prints `seed=N`; the same seed gives the same fault schedule (targets, kinds,
delays) and the same mix of writes. Timing still differs from run to run, so a replay makes the
same faults happen at the same moments, not byte-for-byte the same history.
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from system import System, now  # noqa: E402  (first: it puts test/integration on the path)
import harness  # noqa: E402
import nemeses  # noqa: E402
from checker import check  # noqa: E402
from load import LoadGen  # noqa: E402

# Targets that are one process each (relay, consumer and nats name every process of their kind:
# relay0, relay1...), then the faults of nemeses.py, which pick their processes themselves.
PROCESS_TARGETS = ("api", "relay", "consumer", "nats", "postgres", "ferretdb")
FAULT_TARGETS = ("lease", "window", "full", "rollback", "purge", "delete")
ALL_TARGETS = PROCESS_TARGETS + FAULT_TARGETS
PAUSE_TARGETS = ("api", "relay", "consumer", "nats")
TERM_TARGETS = ("api", "relay", "consumer")
# The soak's stream forgets a Nats-Msg-Id after this, so a relay restarted later republishes for
# good, and the `window` fault need not wait the default 2 minutes.
DUPLICATE_WINDOW_S = 2.0


class Nemesis(threading.Thread):
    """Every uniform(1, 5) s picks a target (shuffled rounds over all of them) and faults it: a
    process is SIGKILLed (restarted after 0-2 s), paused with SIGSTOP for longer than the ack
    wait (then SIGCONT), or, for a service, stopped with SIGTERM (it must exit 0 within 10 s;
    restarted after 0-2 s); a fault target runs its function of nemeses.py."""

    def __init__(self, system: System, seed: int, targets=ALL_TARGETS, pause_s: float = 4.0,
                 interval=(1.0, 5.0), duplicate_window_s: float = DUPLICATE_WINDOW_S, log=print):
        super().__init__(name="nemesis", daemon=True)
        self.system = system
        self.rng = random.Random(seed)
        self.targets = [t for t in targets if t in system.nodes or t in FAULT_TARGETS]
        if "lease" in self.targets and len(system.services("notification-consumer")) < 2:
            # A paused holder needs a stand-by to take over.
            self.targets.remove("lease")
            log(f"{now()} nemesis: no `lease` fault with one consumer process (--consumers 2)")
        if "rollback" in self.targets and "nats" not in system.nodes:
            # In a cluster the other replicas hold what one server's store lost: a fault of
            # another kind, left out here.
            self.targets.remove("rollback")
            log(f"{now()} nemesis: no `rollback` fault on a cluster (one nats-server only)")
        self.pause_s = pause_s
        self.interval = interval
        self.duplicate_window_s = duplicate_window_s
        self.log = log
        self.stopping = threading.Event()
        # What happened: kills, pauses, terms, and each fault of nemeses.py that took place
        # (missed: it found no moment for it, e.g. no batch in hand).
        self.counts = collections.Counter()
        self.errors: list[str] = []
        self.history: list[str] = []

    @property
    def kills(self) -> int:
        return self.counts["kills"]

    @property
    def pauses(self) -> int:
        return self.counts["pauses"] + self.counts["lease"]

    def run(self):
        # Targets in shuffled rounds: random order, yet every one is hit within a round, so a
        # short run covers all of them.
        round_ = []
        while not self.stopping.wait(self.rng.uniform(*self.interval)):
            if not round_:
                round_ = list(self.targets)
                self.rng.shuffle(round_)
            target = round_.pop()
            kind = target.rstrip("0123456789")
            roll = self.rng.random()
            delay = self.rng.uniform(0, 2)
            try:
                if target in FAULT_TARGETS:
                    self.fault(target)
                elif kind in PAUSE_TARGETS and roll < 0.25:
                    self.pause(self.system.nodes[target])
                elif kind in TERM_TARGETS and roll < 0.45:
                    self.term(self.system.nodes[target], delay)
                else:
                    self.kill(self.system.nodes[target], delay)
            except Exception as e:  # noqa: BLE001 - a fault the system did not survive
                msg = f"{target}: {e}"
                self.errors.append(msg)
                self.event(f"ERROR {msg}")
                # Whatever the fault left down comes back, so the run goes on.
                try:
                    self.system.restart_dead()
                except Exception as e2:  # noqa: BLE001
                    self.errors.append(f"restart after {target}: {e2}")

    def pause(self, node):
        self.event(f"SIGSTOP {node.name} for {self.pause_s:.1f}s")
        node.pause()
        self.counts["pauses"] += 1
        self.stopping.wait(self.pause_s)
        node.cont()
        self.event(f"SIGCONT {node.name}")

    def kill(self, node, delay):
        self.event(f"SIGKILL {node.name}, restart in {delay:.1f}s")
        node.kill()
        self.counts["kills"] += 1
        time.sleep(delay)
        node.start(60)
        self.event(f"restarted {node.name}")

    def term(self, node, delay):
        self.event(f"SIGTERM {node.name}, restart {delay:.1f}s after it exits")
        self.counts["terms"] += 1
        try:
            ev = nemeses.terminate(node)
            self.event(f"{node.name} exited {ev['exit']} {ev['seconds']}s after SIGTERM")
        finally:
            time.sleep(delay)
            if not node.running():
                node.start(60)
        self.event(f"restarted {node.name}")

    def fault(self, target):
        if target == "lease":
            ev = nemeses.pause_lease_holder(self.system, log=self.log)
        elif target == "window":
            ev = nemeses.republish_after_window(self.system, self.duplicate_window_s, log=self.log)
        elif target == "full":
            ev = nemeses.fill_stream(self.system, log=self.log)
        elif target == "rollback":
            ev = nemeses.rollback_store(self.system, log=self.log)
        elif target == "purge":
            ev = nemeses.purge_stream(self.system, log=self.log)
        else:
            ev = nemeses.delete_stream(self.system, log=self.log)
        if ev is None:
            self.counts[f"{target}_missed"] += 1
            self.event(f"{target}: no moment for it came (nothing in hand, no batch, no writes)")
        else:
            self.counts[target] += 1
            self.history.append(f"{now()} nemesis: {target}: {ev}")

    def event(self, text):
        line = f"{now()} nemesis: {text}"
        self.history.append(line)
        self.log(line)

    def summary(self) -> str:
        keys = ("kills", "pauses", "terms", *FAULT_TARGETS,
                *(f"{t}_missed" for t in FAULT_TARGETS))
        return " ".join(f"{k}={self.counts[k]}" for k in keys)

    def stop(self):
        self.stopping.set()
        self.join(120)


def run(duration: float, seed: int, threads: int = 4, targets=ALL_TARGETS, log=print, rate=0.0,
        relays: int = 1, consumers: int = 1, cluster: bool = False, settle: float = 2.0,
        drain_timeout: float = 120.0, api_delay_ms: int = 200,
        duplicate_window_s: float = DUPLICATE_WINDOW_S):
    """Runs one nemesis soak; returns (report, system errors list). Starts and closes the system.

    api_delay_ms: user-api holds every answer that long after its commit (the failpoint
    api.after_commit_before_response=pause), so that a kill of user-api finds committed writes
    whose answer is not sent yet: the unknowns the checker must resolve.
    duplicate_window_s: the stream's duplicate window (RELAY_DUPLICATE_WINDOW): a relay restarted
    within it has its republished events dropped by JetStream, one restarted later has them
    stored again and absorbed by the consumer."""
    log(f"chaos: seed={seed} duration={duration}s threads={threads} targets={','.join(targets)} "
        f"rate={f'{rate:g}/s' if rate else 'unpaced'} api_delay={api_delay_ms}ms consumers={consumers} relays={relays} "
        f"duplicate_window={duplicate_window_s:g}s bin={os.environ.get('BIN_DIR', 'bin')}")
    extra = {"outbox-relay": {"RELAY_DUPLICATE_WINDOW": f"{int(duplicate_window_s * 1000)}ms"}}
    if api_delay_ms > 0:
        extra["user-api"] = {"FAILPOINTS": f"api.after_commit_before_response=pause({api_delay_ms})"}
    system = System(relays=relays, consumers=consumers, cluster=cluster, extra_env=extra).start()
    errors = []
    try:
        load = LoadGen(system.api_url, threads=threads, seed=seed, rate=rate).start()
        load.wait_ok(threads * 2, 30)
        nemesis = Nemesis(system, seed, targets, duplicate_window_s=duplicate_window_s, log=log)
        nemesis.start()
        time.sleep(duration)
        nemesis.stop()
        errors += nemesis.errors
        log(f"{now()} nemesis: {nemesis.summary()}")
        # Faults stop: every process runs again; writes go on a little to show recovery.
        system.restart_dead()
        time.sleep(settle)
        load.stop()
        stopped = time.monotonic()
        try:
            system.wait_ready(60)
        except TimeoutError as e:
            errors.append(f"not ready after the faults: {e}")
        rep = check(system, load.ops, kills=nemesis.kills, pauses=nemesis.pauses,
                    drain_timeout=drain_timeout, seed=seed)
        # Not paced for the consumer's sake: how long the copy took to catch up.
        if rep.drained_at is not None:
            log(f"{now()} converged {rep.drained_at - stopped:.1f}s after the writes stopped "
                f"({len(load.ops)} requests in {duration + settle:g}s)")
        # The faults beyond kills and pauses, in the line of figures after those two.
        figs = list(rep.figures.items())
        at = [k for k, _ in figs].index("pauses") + 1
        extra = [(k, nemesis.counts[k]) for k in ("terms", *FAULT_TARGETS)]
        rep.figures.clear()
        rep.figures.update(figs[:at] + extra + figs[at:])
        for name, rc in system.stop_services().items():
            if rc != 0:
                errors.append(f"{name} exited {rc} on SIGTERM")
        if sanitizer_build(system):
            errors += sanitizer_reports(system)
        else:
            log("sanitizer scan: none, bin is not a sanitizer build (make chaos SAN=1)")
        if errors or not rep.passed:
            log(system.logs(40))
        return rep, errors
    finally:
        system.close()


def sanitizer_build(system: System) -> bool:
    """Whether the services run a sanitizer build (make san), whose logs a scan can judge."""
    return all(harness.sanitizer_build(n.proc.binary) for n in system.services())


def sanitizer_reports(system: System) -> list[str]:
    """Lines of AddressSanitizer / UndefinedBehaviorSanitizer / LeakSanitizer reports in the logs
    of the project's processes. Only for a sanitizer build: harness.sanitizer_reports() refuses
    any other, whose log would pass for want of a sanitizer."""
    return [f"{n.name}: {line.strip()}" for n in system.services()
            for line in harness.sanitizer_reports(n.proc.binary, n.log_text())]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=float(os.environ.get("DURATION") or 60))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SEED") or 0) or None)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="requests a second in all (default 0: unpaced, as fast as answered)")
    ap.add_argument("--relays", type=int, default=1, help="relay processes (one leads)")
    ap.add_argument("--consumers", type=int, default=2,
                    help="consumer processes (one applies, the others stand by; the `lease` "
                    "fault needs two)")
    ap.add_argument("--duplicate-window", type=float, default=DUPLICATE_WINDOW_S,
                    help="the stream's duplicate window in seconds (RELAY_DUPLICATE_WINDOW)")
    ap.add_argument("--api-delay-ms", type=int, default=200,
                    help="user-api holds each answer this long after its commit (0: off)")
    ap.add_argument("--cluster", action="store_true",
                    help="a 3-server JetStream cluster, stream replicated 3 times")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS),
                    help="comma-separated: " + ",".join(ALL_TARGETS))
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 10**9)
    targets = []
    for t in a.targets.split(","):
        # relay, consumer and nats name every process of their kind (relay0, relay1, nats0...).
        many = {"relay": a.relays, "consumer": a.consumers, "nats": 3 if a.cluster else 1}.get(t, 1)
        targets += [f"{t}{i}" for i in range(many)] if many > 1 else [t]
    rep, errors = run(a.duration, seed, a.threads, tuple(targets),
                      log=lambda s: print(s, flush=True), rate=a.rate, relays=a.relays,
                      consumers=a.consumers, cluster=a.cluster, api_delay_ms=a.api_delay_ms,
                      duplicate_window_s=a.duplicate_window)
    for e in errors:
        print(f"error: {e}")
    print(rep.text())
    print(f"replay: test/chaos/chaos.py --seed {seed} --duration {a.duration:g}")
    sys.exit(0 if rep.passed and not errors else 1)


if __name__ == "__main__":
    main()
