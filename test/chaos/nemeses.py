"""The faults beyond a kill or a pause, shared by the soak's nemesis (chaos.py) and the bounded
scenarios of test/integration/test_chaos_nemeses.py:

  terminate             SIGTERM of a service under load: it must exit 0 within 10 s
  pause_lease_holder    the consumer holding the lease SIGSTOPped with fetched messages in hand,
                        longer than CONSUMER_LEASE_TTL, while the stand-by takes over; then SIGCONT
  republish_after_window  the relay crashes after its PubAcks and before its commit, and comes
                        back only after the stream's duplicate window: it publishes the same
                        events again, which JetStream now stores, and the consumer must absorb
  fill_stream           the relays restarted with RELAY_STREAM_MAX_BYTES just above what the
                        stream holds, so it refuses new events (discard new) under load, then
                        restarted without the limit, so it accepts them again

Each returns what it saw happen (for the caller to assert or log), returns None when the moment
it needs never came (no batch to crash on, nothing in hand to pause with), and raises Fault when
the system did not do what it must under the fault.
"""
from __future__ import annotations

import re
import time

from system import Node, System, consumer_pending  # first: it puts test/integration on the path
import harness  # noqa: E402

# The relay's log line when JetStream refuses a publish because the stream is full (nats-server's
# "maximum bytes exceeded", JetStream error 10077, in the batch's failure line).
STREAM_FULL = re.compile(r"could not publish .*maximum bytes exceeded")


class Fault(Exception):
    """The system did not do what it must under the fault: an error of the run."""


def log_lines(node: Node, pattern) -> list[str]:
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    return [line for line in node.log_text().splitlines() if rx.search(line)]


def wait_log(nodes, pattern, seen: int, timeout: float, what: str) -> str:
    """Waits until the logs of nodes hold more than `seen` lines matching pattern; returns the
    newest. Raises TimeoutError."""
    def more():
        lines = [line for n in nodes for line in log_lines(n, pattern)]
        return lines[-1] if len(lines) > seen else None
    return harness.wait_for(more, timeout, 0.1, what)


def terminate(node: Node, limit: float = 10.0) -> dict:
    """SIGTERM: the service must stop taking work, finish or hand back what it holds and exit 0
    within limit seconds (DESIGN: Operations). Not restarted here."""
    rc, took = node.term(limit)
    if rc != 0:
        raise Fault(f"{node.name} exited {rc} {took:.1f}s after SIGTERM (0 within {limit:g}s "
                    f"required):\n{node.proc.log_tail(15)}")
    return {"node": node.name, "exit": rc, "seconds": round(took, 2)}


# --- the lease holder paused with a batch in hand --------------------------------------------------

def stop_holder_holding(system: System, tries: int = 100) -> tuple[Node, int] | None:
    """SIGSTOPs the consumer that holds the lease at a moment it holds fetched, unacknowledged
    messages: it is stopped first, then the durable's num_ack_pending is read (only the holder
    fetches, so what is pending is in its hands); when nothing is, it is resumed at once (a few
    milliseconds, far inside the TTL) and tried again. Returns (node, messages in hand) or None."""
    for _ in range(tries):
        holder = system.lease_holder()
        if holder is None:
            time.sleep(0.2)
            continue
        holder.pause()
        try:
            held = consumer_pending(system.nats_url())[1]
        except Exception:  # noqa: BLE001 - not known: try again
            held = 0
        if held > 0:
            return holder, held
        holder.cont()
        time.sleep(0.1)
    return None


def pause_lease_holder(system: System, hold_s: float | None = None, stopped=None,
                       log=print) -> dict | None:
    """The lease holder stays SIGSTOPped for hold_s (default: the lease TTL + 3 s, so the lease
    lapses and the stand-by takes it, and the messages in hand are redelivered to it after the
    ack wait); then SIGCONT, and the old holder resumes with its batch in hand while the new one
    applies. stopped: (node, messages in hand) of a holder the caller has already stopped (the
    tests stop it at a failpoint); else stop_holder_holding() finds the moment.

    Raises Fault when no stand-by takes the lease while the holder is stopped. Returns
    {holder, held, taken_over_by, takeover_s, paused_s, from, to (wall clock), resumed_standby}."""
    ttl = system.lease_ttl()
    hold_s = hold_s if hold_s is not None else ttl + 3.0
    if stopped is None:
        stopped = stop_holder_holding(system)
        if stopped is None:
            return None
    holder, held = stopped
    t0, wall0 = time.monotonic(), time.time()
    log(f"{now()} nemesis: SIGSTOP {holder.name}, the lease holder, with {held} message(s) in "
        f"hand, for {hold_s:.1f}s (lease TTL {ttl:g}s)")
    taker = None
    took = None
    while time.monotonic() - t0 < hold_s:
        if taker is None:
            h = system.lease_holder()
            if h is not None and h is not holder:
                taker, took = h, time.monotonic() - t0
        time.sleep(0.2)
    holder.cont()
    wall1, paused = time.time(), time.monotonic() - t0
    log(f"{now()} nemesis: SIGCONT {holder.name} after {paused:.1f}s; "
        f"{taker.name if taker else 'no stand-by'} took the lease"
        + (f" after {took:.1f}s" if took is not None else ""))
    if taker is None:
        raise Fault(f"no stand-by took the lease in the {hold_s:.1f}s {holder.name} was stopped "
                    f"(lease TTL {ttl:g}s)")

    # Resumed, it must find out that it lost the lease and stand by.
    def standing_by():
        import requests
        c = requests.get(holder.proc.url + "/readyz", timeout=2).json()["checks"]["consumer"]
        return c.startswith("standby")
    try:
        harness.wait_for(standing_by, ttl + 2, 0.1, f"{holder.name} to stand by")
        resumed_standby = True
    except TimeoutError:
        resumed_standby = False
    return {"holder": holder.name, "held": held, "taken_over_by": taker.name,
            "takeover_s": round(took, 2), "paused_s": round(paused, 2),
            "from": wall0, "to": wall1, "resumed_standby": resumed_standby}


# --- a republish after the duplicate window ----------------------------------------------------------

def republish_after_window(system: System, window_s: float, timeout: float = 30.0,
                           log=print) -> dict | None:
    """Every relay is stopped (SIGTERM); the first starts again with the failpoint
    relay.after_acks_before_commit=crash@1: it publishes a batch, gets every PubAck and dies
    before its commit, so the rows stay in the outbox. It is started again only after the
    stream's duplicate window (window_s) has passed, with the others: the new leader publishes the
    same events again, and JetStream, no longer remembering their Nats-Msg-Ids, stores them a
    second time. The consumer's version guard is what must absorb them (the checker's
    dup_absorbed). Returns {relay, crash_line, restarted_after_s} or None when no batch came to
    crash on within timeout (then the relays are simply restarted)."""
    point = "relay.after_acks_before_commit"
    relays = system.services("outbox-relay")
    for r in relays:
        if r.running():
            terminate(r)
    first = relays[0]
    seen = len(log_lines(first, f"failpoint {point}: crash"))
    first.proc.env["FAILPOINTS"] = f"{point}=crash@1"
    try:
        # Not awaited: it may well crash before its /healthz is first asked.
        first.proc.start(wait=False)
        try:
            harness.wait_for(lambda: not first.running(), timeout, 0.05,
                             f"{first.name} to crash at {point}")
        except TimeoutError:
            first.stop(12)
            crashed = None
        else:
            crashed = time.monotonic()
    finally:
        del first.proc.env["FAILPOINTS"]
    if crashed is None:
        for r in relays:
            r.start()
        return None
    lines = log_lines(first, f"failpoint {point}: crash")
    if first.proc.proc.returncode != -9 or len(lines) <= seen:
        raise Fault(f"{first.name} ended with status {first.proc.proc.returncode}, not at "
                    f"{point}:\n{first.proc.log_tail(15)}")
    log(f"{now()} nemesis: {first.name} crashed at {point} (PubAcks in hand, no commit); "
        f"every relay restarts after the duplicate window of {window_s:g}s")
    # No relay runs until the window has passed: any of them would republish those rows at
    # once, inside the window, where JetStream drops them (the case the kills already make).
    time.sleep(max(0.0, window_s + 1.0 - (time.monotonic() - crashed)))
    for r in relays:
        r.start()
    return {"relay": first.name, "crash_line": lines[-1].strip(),
            "restarted_after_s": round(time.monotonic() - crashed, 2)}


# --- a full stream ----------------------------------------------------------------------------------

def fill_stream(system: System, hold_s: float = 3.0, headroom_msgs: int = 5,
                timeout: float = 30.0, log=print) -> dict | None:
    """Every relay is restarted with RELAY_STREAM_MAX_BYTES a few messages above what the stream
    holds (measured while no relay runs, so the stream cannot grow meanwhile): the refusal comes
    from the writes of the run, a few events later, not from the restart. The stream then refuses
    new events (discard new); the relay rolls its batch back and retries, and the writes wait in
    the outbox. After hold_s more
    of that, every relay is restarted with its former setting, and the relay updates the stream
    (stream.c: max bytes can change in place) so that it accepts again.

    Raises Fault when the stream does not accept again within timeout. Returns {limit, refusal
    (the relay's log line), readyz (the leader's answer while refused), outbox_while_full,
    accepted_after_s} or None when the writes never filled the stream within timeout."""
    relays = system.services("outbox-relay")
    for r in relays:
        if r.running():
            terminate(r)
    before = {r.name: r.proc.env.get("RELAY_STREAM_MAX_BYTES") for r in relays}
    st = system.stream_info().state
    per_msg = st.bytes // st.messages if st.messages else 512
    limit = st.bytes + headroom_msgs * per_msg
    seen = sum(len(log_lines(r, STREAM_FULL)) for r in relays)
    for r in relays:
        r.restart_with({"RELAY_STREAM_MAX_BYTES": limit})
    log(f"{now()} nemesis: relays restarted with RELAY_STREAM_MAX_BYTES={limit} (the stream holds "
        f"{st.bytes} bytes in {st.messages} messages)")
    out = {"limit": limit}
    try:
        try:
            out["refusal"] = wait_log(relays, STREAM_FULL, seen, timeout,
                                      "the relay to log that the stream refused an event").strip()
        except TimeoutError:
            return None
        # While refused, the leader says why it is not ready (the reason clears for the moment
        # between a claim and the next refusal, so it is looked for a little while).
        try:
            out["readyz"] = harness.wait_for(_refused_readyz(system), 10, 0.1,
                                             "/readyz to name the full stream")
        except TimeoutError:
            out["readyz"] = None
        log(f"{now()} nemesis: the stream is full: {out['refusal']}")
        time.sleep(hold_s)
        out["outbox_while_full"] = system.pg.sql("SELECT count(*) FROM outbox_pending")[0][0]
    finally:
        t0 = time.monotonic()
        for r in relays:
            if r.running():
                terminate(r)
        for r in relays:
            r.restart_with({"RELAY_STREAM_MAX_BYTES": before[r.name]})
    try:
        harness.wait_for(lambda: system.stream_info().state.bytes > limit, timeout, 0.2,
                         "the stream to accept events again")
    except TimeoutError as e:
        raise Fault(f"{e}; relay logs:\n" + "\n".join(r.proc.log_tail(10) for r in relays))
    out["accepted_after_s"] = round(time.monotonic() - t0, 2)
    log(f"{now()} nemesis: the stream accepts again {out['accepted_after_s']}s after the relays "
        f"were stopped to raise the limit ({out['outbox_while_full']} rows waited in the outbox)")
    return out


def _refused_readyz(system: System):
    """A predicate: the leading relay's /readyz when it answers 503 naming the full stream."""
    import requests

    def pred():
        for r in system.services("outbox-relay"):
            resp = requests.get(r.proc.url + "/readyz", timeout=2)
            checks = resp.json().get("checks", {})
            if checks.get("role") == "leader" and resp.status_code == 503 and \
                    "maximum bytes" in checks.get("problem", ""):
                return {"status": resp.status_code, "checks": checks}
        return None
    return pred


def now() -> str:
    return time.strftime("%H:%M:%S")
