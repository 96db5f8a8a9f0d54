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
  rollback_store        nats-server killed and started again from a copy of its store taken
                        while later events were still to come: the stream lost events it had
                        acknowledged (and the relay marked published); the relay publishes its
                        kept rows again
  delete_stream         the stream deleted under the relay (and the consumer's durable with it):
                        the relay creates it again and publishes every kept row again, the
                        consumer creates its durable again with DeliverAll
  purge_stream          the stream purged under the relay: the kept rows below its new first
                        sequence are published again once the duplicate window has passed

Each returns what it saw happen (for the caller to assert or log), returns None when the moment
it needs never came (no batch to crash on, nothing in hand to pause with), and raises Fault when
the system did not do what it must under the fault.
"""
from __future__ import annotations

import re
import shutil
import time

from system import (DURABLE, STREAM, Node, System, consumer_pending,  # first: it puts
                    js_call)                                # test/integration on the path
import harness  # noqa: E402

# The relay's log line when JetStream refuses a publish because the stream is full (nats-server's
# "maximum bytes exceeded", JetStream error 10077, in the batch's failure line).
STREAM_FULL = re.compile(r"could not publish .*maximum bytes exceeded")
# The relay's one warning line when it sets kept rows waiting again because the stream lost them
# (outbox-relay/relay.c, relay_check), followed by why (watch.c, watch_describe).
RESTORED = re.compile(r'restored (\d+) events to stream "' + STREAM +
                      r'": (.*?); they are published')


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


# --- the stream loses what it acknowledged --------------------------------------------------------

def relay_metric(system: System, name: str, **labels) -> float:
    """The sum over the running relays of one series of their /metrics (0 where absent). A
    counter starts again at 0 with each process: compare values taken while no relay restarts."""
    import requests
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    total = 0.0
    for r in system.services("outbox-relay"):
        if not r.running():
            continue
        for line in requests.get(r.proc.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(want + " "):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _relay_figures(system: System) -> dict:
    return {"restored": relay_metric(system, "relay_events_restored_total"),
            "gap": relay_metric(system, "relay_stream_gap_events")}


def _restore_seen(system: System, reason: str, before: dict, seen: int, timeout: float,
                  what: str) -> dict:
    """Waits for the relay's restore line (one more than `seen`) and its counters; returns
    {restore_line, restored_logged, restored_metric, restores (of that reason), gap}. Raises Fault
    when no restore comes within timeout."""
    relays = system.services("outbox-relay")
    try:
        line = wait_log(relays, RESTORED, seen, timeout, what)
    except TimeoutError as e:
        raise Fault(f"{e}; relay logs:\n" + "\n".join(r.proc.log_tail(15) for r in relays))
    logged = int(RESTORED.search(line).group(1))
    # The counter moves in the same step as the line; asked a moment later it has.
    after = harness.wait_for(lambda: (lambda f: f if f["restored"] >= before["restored"] + logged
                                      else None)(_relay_figures(system)), 5, 0.1,
                             "relay_events_restored_total to count the restore")
    return {"restore_line": line.strip(), "restored_logged": logged,
            "restored_metric": after["restored"] - before["restored"],
            "restores": relay_metric(system, "relay_stream_restores_total", reason=reason),
            "gap": after["gap"] - before["gap"]}


def _restore_lines(system: System) -> int:
    return sum(len(log_lines(r, RESTORED)) for r in system.services("outbox-relay"))


def _published_after(system: System, seq: int) -> int:
    """Outbox rows marked published (acknowledged by JetStream) at a stream sequence above seq."""
    return system.pg.sql("SELECT count(*) FROM outbox WHERE published_seq > %s", seq)[0][0]


def rollback_store(system: System, later: int = 10, timeout: float = 30.0,
                   log=print) -> dict | None:
    """The disk of nats-server loses what it wrote last. Under writes, its store folder is copied
    aside while the server is stopped for the copy (SIGSTOP ... SIGCONT: the files are then those
    of one instant, as a kill -9 at that instant leaves them, so the copy is a state nats-server
    must recover from; copied while it runs, a file could come from before an event and the next
    from after it, a state no crash produces). The writes go on until `later` more events are
    acknowledged by JetStream and their outbox rows marked published at sequences above the
    stream's last one right after the copy; then nats-server is SIGKILLed, its store replaced by
    the copy, and started again on the same ports. The stream has lost events it acknowledged; the
    relay must notice (on the reconnect, or from PubAcks that go back) and publish its kept rows
    again, with one warning line.

    A single server only (with a cluster, the other replicas hold what one server lost). Raises
    Fault when the relay restores nothing within timeout. Returns {copied_last_seq (the stream's
    last sequence right after the copy: the copy holds at most that), lost_acked (rows marked
    published above it when the server was killed), stream_last_after (its last sequence once
    back), restore_line, restored_logged, restored_metric, restores, gap, back_after_s} or None
    when the writes did not bring `later` acknowledged events within timeout (then nothing was
    rolled back)."""
    node = system.nodes.get("nats")
    if node is None:
        raise Fault("rollback_store needs a single nats-server (not a cluster)")
    nats = node.proc
    older = nats.dir / "store-older"
    shutil.rmtree(older, ignore_errors=True)
    node.pause()
    try:
        shutil.copytree(nats.store, older)
    finally:
        node.cont()
    copied = system.stream_info().state.last_seq
    log(f"{now()} nemesis: copied the store of nats-server aside (the stream's last sequence "
        f"{copied} at most); waiting for {later} events acknowledged after it")
    try:
        harness.wait_for(lambda: _published_after(system, copied) >= later, timeout, 0.1,
                         f"{later} events acknowledged and marked published after sequence "
                         f"{copied}")
    except TimeoutError:
        shutil.rmtree(older, ignore_errors=True)
        return None
    before = _relay_figures(system)
    seen = _restore_lines(system)
    node.kill()
    lost = _published_after(system, copied)
    t0 = time.monotonic()
    shutil.rmtree(nats.store)
    shutil.move(older, nats.store)
    node.start(60)
    last = system.stream_info().state.last_seq
    log(f"{now()} nemesis: nats-server SIGKILLed and started again from the older store: the "
        f"stream's last sequence is {last}, {lost} events acknowledged above {copied} are gone")
    out = {"copied_last_seq": copied, "lost_acked": lost, "stream_last_after": last}
    out.update(_restore_seen(system, "went_back", before, seen, timeout,
                             "the relay to restore what the stream lost"))
    out["back_after_s"] = round(time.monotonic() - t0, 2)
    log(f"{now()} nemesis: the relay restored {out['restored_logged']} events "
        f"{out['back_after_s']}s after the kill: {out['restore_line']}")
    return out


def durable_info(system: System):
    """nats-py's ConsumerInfo of the consumer's durable; None when it or the stream is missing."""
    from nats.js import errors as js_errors

    async def fn(js):
        try:
            return await js.consumer_info(STREAM, DURABLE)
        except js_errors.NotFoundError:
            return None
    return js_call(system.nats_url(), fn)


def delete_stream(system: System, timeout: float = 30.0, log=print) -> dict:
    """Deletes the stream under the relay (nats-py, as an operator would with `nats stream rm`).
    Its consumers go with it, the consumer's durable too. The relay must create the stream again
    (its next batch fails, or its next check finds it missing) and publish every kept row again;
    the consumer must create its durable again, with DeliverAll (DESIGN: never DeliverNew), and
    apply from the start of the new stream.

    Raises Fault when no restore comes, or when the durable does not come back as DeliverAll
    within timeout. Returns {messages_deleted, kept (rows marked published when it was deleted),
    restore_line, restored_logged, restored_metric, restores, gap, durable_back_s,
    durable_deliver_policy, consumer_lines (the consumers' log lines about it)}."""
    before = _relay_figures(system)
    seen = _restore_lines(system)
    consumers = system.services("notification-consumer")
    marks = {c.name: len(c.log_text().splitlines()) for c in consumers}
    info = system.stream_info()
    kept = system.pg.sql("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")[0][0]

    async def rm(js):
        return await js.delete_stream(STREAM)
    assert js_call(system.nats_url(), rm)
    t0 = time.monotonic()
    log(f"{now()} nemesis: deleted stream {STREAM} ({info.state.messages} messages, {kept} kept "
        f"rows in the outbox)")
    out = {"messages_deleted": info.state.messages, "kept": kept}
    out.update(_restore_seen(system, "missing", before, seen, timeout,
                             "the relay to create the stream again and restore its kept rows"))
    log(f"{now()} nemesis: {out['restore_line']}")
    try:
        ci = harness.wait_for(lambda: durable_info(system), timeout, 0.2,
                              f"the durable {DURABLE} to come back")
    except TimeoutError as e:
        raise Fault(f"{e}; consumer logs:\n" + "\n".join(c.proc.log_tail(15) for c in consumers))
    out["durable_back_s"] = round(time.monotonic() - t0, 2)
    policy = ci.config.deliver_policy
    out["durable_deliver_policy"] = getattr(policy, "value", policy)
    out["consumer_lines"] = [line.strip() for c in consumers
                             for line in c.log_text().splitlines()[marks[c.name]:]
                             if "jetstream" in line][:10]
    log(f"{now()} nemesis: the durable {DURABLE} is back after {out['durable_back_s']}s, deliver "
        f"policy {out['durable_deliver_policy']}")
    if out["durable_deliver_policy"] != "all":
        raise Fault(f"the consumer created its durable again with deliver policy "
                    f"{out['durable_deliver_policy']}, not all: the events before it are skipped")
    return out


def purge_stream(system: System, timeout: float = 30.0, log=print) -> dict:
    """Purges the stream under the relay (nats-py, as `nats stream purge`). The durable stays;
    JetStream moves it past the purged messages. The relay must publish again the kept rows below
    the new first sequence, once the duplicate window has passed for them (inside it JetStream
    still drops them as copies of the purged messages), with one warning line.

    Raises Fault when no restore comes within timeout (give it the duplicate window and a check
    interval). Returns {purged (messages), first_seq_after, kept, restore_line, restored_logged,
    restored_metric, restores, gap, held_line (the warning that they wait for the window, if
    any), restored_after_s}."""
    before = _relay_figures(system)
    seen = _restore_lines(system)
    held = r"no longer holds \d+ kept events below its first sequence"
    held_seen = sum(len(log_lines(r, held)) for r in system.services("outbox-relay"))
    kept = system.pg.sql("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")[0][0]

    async def purge(js):
        before = await js.stream_info(STREAM)
        await js.purge_stream(STREAM)
        return before, await js.stream_info(STREAM)
    t0 = time.monotonic()
    info0, info = js_call(system.nats_url(), purge)
    log(f"{now()} nemesis: purged stream {STREAM} ({info0.state.messages} messages): its first "
        f"sequence is {info.state.first_seq} ({kept} kept rows in the outbox)")
    out = {"purged": info0.state.messages, "first_seq_after": info.state.first_seq,
           "kept": kept}
    out.update(_restore_seen(system, "purged", before, seen, timeout,
                             "the relay to restore the purged events"))
    out["restored_after_s"] = round(time.monotonic() - t0, 2)
    lines = [line for r in system.services("outbox-relay") for line in log_lines(r, held)]
    out["held_line"] = lines[-1].strip() if len(lines) > held_seen else None
    log(f"{now()} nemesis: {out['restore_line']} ({out['restored_after_s']}s after the purge)")
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
