"""The faults of test/chaos/nemeses.py, each once, bounded for `make test` (the soak, `make chaos`,
draws them at random among the kills and pauses): the consumer holding the lease paused with a
batch in hand while the stand-by applies, SIGTERM of the consumer under load, a relay that
republishes after the stream's duplicate window, a stream that is full and then accepts again,
and a stream that loses what it acknowledged: nats-server back on an older copy of its store, the
stream deleted, the stream purged. Each asserts that its fault really happened (from the
processes' logs, the stream and the history) and that the checker of test/chaos passes: nothing
lost, nothing applied twice, one writer per user."""
import os
import re
import sys
import time
from pathlib import Path

import pytest

import harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))

import nemeses  # noqa: E402
from checker import applied_time  # noqa: E402
from load import LoadGen  # noqa: E402
from system import MONGO_DB, System, consumer_pending  # noqa: E402
from test_chaos import finish  # noqa: E402

SEED = int(os.environ.get("CHAOS_SEED") or 4242)
FETCHED = "consumer.after_fetch_before_apply"
BETWEEN = "consumer.between_upsert_and_history"


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


def lines_after(node, marker: str) -> list[str]:
    """The lines of node's log after the last one containing marker."""
    lines = node.log_text().splitlines()
    at = max(i for i, line in enumerate(lines) if marker in line)
    return lines[at + 1:]


# Where the lease holder is caught, and the ack wait. The lease TTL is the product's 5 s; the
# pause is the TTL + 3 s. With an ack wait of 3 s the messages it has in hand go to the stand-by
# before it resumes; with 10 s it resumes first, finishes the event it was in the middle of
# without the lease while the stand-by applies, and hands the rest back. Caught right after a
# fetch, before its first apply, the stand-by or the resumed holder finds that event already
# applied. Caught between the copy's write and its history entry (a moment the soak's `lease`
# fault finds too), the copy holds the event and its history does not yet: whoever comes to it
# first (the stand-by, from the redelivery or before its next write of that user, or the resumed
# holder) must write the one applied entry, naming the holder's write, and the other must add
# nothing (no superseded entry, no second effect).
HOLDER_CAUGHT = [
    pytest.param(FETCHED, "3s", id="after-fetch-redelivered-before-the-holder-resumes"),
    pytest.param(FETCHED, "10s", id="after-fetch-the-holder-resumes-before-the-redelivery"),
    pytest.param(BETWEEN, "3s", id="between-the-copy-and-its-history-entry"),
    pytest.param(BETWEEN, "10s",
                 id="between-the-copy-and-its-history-entry-the-holder-resumes-first"),
]


@pytest.mark.parametrize("point,ack_wait", HOLDER_CAUGHT)
def test_lease_holder_paused_with_a_batch_in_hand_while_the_standby_applies(systems, point,
                                                                               ack_wait):
    """Two consumer processes. The lease holder stops (SIGSTOP) with fetched messages in hand,
    at a failpoint that pauses it long enough to be caught there, and stays stopped longer than
    the lease TTL: the lease lapses, the stand-by takes it and applies. Then the old holder
    resumes (SIGCONT) with the batch still in hand while the new one applies: it may finish the
    event it was in the middle of, but must apply nothing more and stand by, and the checker must
    find every version applied once, in order, by one writer at a time."""
    armed = f"{point}=pause(1500)@25"
    system = systems(consumers=2, ack_wait=ack_wait,
                     failpoints={"consumer0": armed, "consumer1": armed})
    consumers = system.services("notification-consumer")
    # Few users written often: the batch in hand and the stand-by's events share users.
    load = LoadGen(system.api_url, threads=4, seed=SEED, rate=15, max_users=2).start()
    try:
        nemeses.wait_log(consumers, f"failpoint {point}: pause", 0, 30,
                         f"the lease holder to reach {point}")
        holder = next(c for c in consumers if nemeses.log_lines(c, f"failpoint {point}"))
        holder.pause()
        held = consumer_pending(system.nats_url())[1]
        assert held >= 1, "the stopped holder has no message in hand"
        ev = nemeses.pause_lease_holder(system, stopped=(holder, held))
        print(ev)
        load.wait_ok(len(load.ops) + 20, 30)
    except BaseException:
        load.stop()
        raise
    rep = finish(system, load, pauses=1)

    # It happened: paused longer than the TTL, the stand-by took the lease and applied meanwhile,
    # and the resumed holder stood by.
    assert ev["paused_s"] > system.lease_ttl() and ev["takeover_s"] <= ev["paused_s"], ev
    taker = system.nodes[ev["taken_over_by"]]
    assert taker is not holder and ev["resumed_standby"], ev
    names = system.consumer_instances()
    with system.ferret.client() as c:
        during = [h for h in c[MONGO_DB].user_notification_events.find({"superseded": False})
                  if names.get(h.get("applied_by")) == taker.name
                  and ev["from"] <= (applied_time(h.get("applied_at")) or 0) <= ev["to"]]
    assert during, f"{taker.name} applied nothing while {holder.name} was stopped"
    # Resumed, the old holder finished at most what its lanes were in the middle of (the round
    # whose documents a lane had written), then handed the rest back: it started no write, so
    # nothing it wrote, document or history entry, is dated after it was stopped.
    after = lines_after(holder, f"failpoint {point}: pause")
    own = next((i for i, line in enumerate(after) if "lease: applying" in line), len(after))
    handled = [line for line in after[:own] if re.search(r" (applied|stale) user_", line)]
    print(f"{holder.name} after SIGCONT:", *handled, sep="\n  ")
    with system.ferret.client() as c:
        db = c[MONGO_DB]
        late = [h for h in list(db.user_notification_events.find()) +
                list(db.user_notifications.find())
                if names.get(h.get("applied_by")) == holder.name
                and (applied_time(h.get("applied_at")) or 0) >= ev["from"]]
    assert late == [], late
    if point == BETWEEN:
        # The events whose copy the holder had written when it stopped: each write took effect
        # once, so each history holds one applied entry naming the holder, counted once.
        applied = [line for line in handled if " applied " in line]
        assert applied, handled
        for line in applied:
            eid = re.search(r"event=(\S+)", line).group(1)
            with system.ferret.client() as c:
                entries = list(c[MONGO_DB].user_notification_events.find({"event_id": eid}))
            print(f"{eid}:", entries)
            assert len(entries) == 1, entries
            h = entries[0]
            assert h["superseded"] is False and not h.get("reapplied"), h
            assert names.get(h.get("applied_by")) == holder.name, (h, names)

    assert rep.passed, rep.text()
    assert rep.figures["two_writers"] == 0 and rep.figures["double"] == 0, rep.line()


def test_consumer_sigterm_under_load_finishes_what_it_holds(systems):
    """SIGTERM of the consumer under writes, twice: once while it holds a fetched batch (stopped
    at consumer.after_fetch_before_apply), once at whatever moment the writes make. Each time it
    must exit 0 within 10 s, having finished or handed back its batch; restarted, it applies
    everything, once."""
    system = systems(failpoints={"consumer": f"{FETCHED}=pause(3000)@10"})
    consumer = system.nodes["consumer"]
    load = LoadGen(system.api_url, threads=4, seed=SEED, rate=15).start()
    terms = []
    try:
        nemeses.wait_log([consumer], f"failpoint {FETCHED}: pause", 0, 30,
                         "the consumer to reach the failpoint with a batch")
        terms.append(nemeses.terminate(consumer))
        after = lines_after(consumer, f"failpoint {FETCHED}: pause")
        print("after SIGTERM:", *after[:10], sep="\n  ")
        assert any("shutting down" in line for line in after), after
        assert any(line.rstrip().endswith(" stopped") for line in after), after[-5:]
        time.sleep(0.5)
        consumer.start()              # without the failpoint
        load.wait_ok(len(load.ops) + 20, 30)
        terms.append(nemeses.terminate(consumer))
        time.sleep(0.5)
        consumer.start()
        load.wait_ok(len(load.ops) + 20, 30)
    except BaseException:
        load.stop()
        raise
    print("SIGTERMs:", terms)
    rep = finish(system, load, kills=0)
    assert rep.passed, rep.text()
    assert all(t["exit"] == 0 and t["seconds"] < 10 for t in terms), terms
    assert len(re.findall(r"shutting down", consumer.log_text())) >= 3  # two here, one in finish


def test_republished_after_the_duplicate_window_the_consumer_absorbs_it(systems):
    """The stream's duplicate window is 1 s. The relay crashes after its PubAcks and before its
    commit (relay.after_acks_before_commit=crash) and comes back after the window: it publishes
    the same events again, JetStream stores them again (it no longer knows their Nats-Msg-Id),
    and the consumer's version guard must absorb them. The checker counts them as duplicates in
    the stream (dup_stream), all absorbed (dup_absorbed), none applied twice."""
    system = systems(extra_env={"outbox-relay": {"RELAY_DUPLICATE_WINDOW": "1s"}})
    load = LoadGen(system.api_url, threads=4, seed=SEED, rate=15).start()
    try:
        load.wait_ok(20, 30)
        ev = nemeses.republish_after_window(system, 1.0)
        print(ev)
        assert ev is not None, "the relay never reached relay.after_acks_before_commit"
        assert ev["restarted_after_s"] > 1.0, ev
        load.wait_ok(len(load.ops) + 20, 30)
    except BaseException:
        load.stop()
        raise
    rep = finish(system, load, kills=1)
    assert rep.passed, rep.text()
    f = rep.figures
    assert f["dup_stream"] >= 1, rep.line()
    assert f["dup_absorbed"] == f["dup_stream"] and f["dup_applied"] == 0, rep.line()


def test_a_full_stream_refuses_then_accepts_again(systems):
    """The relay restarted with RELAY_STREAM_MAX_BYTES a few events above what the stream holds:
    under writes the stream refuses (discard new), the relay says so in its log and its /readyz
    and keeps the events in the outbox. Restarted with no limit, it updates the stream, which
    accepts again; nothing is lost and nothing was dropped from the stream."""
    system = systems()
    relay = system.nodes["relay"]
    load = LoadGen(system.api_url, threads=4, seed=SEED, rate=15).start()
    try:
        load.wait_ok(20, 30)
        ev = nemeses.fill_stream(system, hold_s=3.0)
        print(ev)
        assert ev is not None, "the stream never filled up"
        load.wait_ok(len(load.ops) + 20, 30)
    except BaseException:
        load.stop()
        raise
    rep = finish(system, load)
    assert rep.passed, rep.text()

    assert "maximum bytes exceeded" in ev["refusal"], ev
    assert ev["readyz"] and ev["readyz"]["status"] == 503, ev
    assert ev["outbox_while_full"] > 0, ev
    log = relay.log_text()
    assert f"max bytes -1 -> {ev['limit']}, discard old -> new" in log, log[-2000:]
    assert f"max bytes {ev['limit']} -> -1, discard new -> old" in log, log[-2000:]
    info = system.stream_info()
    assert info.config.max_bytes == -1 and info.state.bytes > ev["limit"], info
    # Nothing was discarded: the stream holds every committed event from its first sequence on.
    assert info.state.first_seq == 1 and info.state.messages >= rep.figures["committed"], info.state


# --- the stream loses what it acknowledged --------------------------------------------------------
# The relay keeps published rows (RELAY_RETAIN, 5 min) and watches the stream (docs/relay.md, "Kept
# rows and the stream watch"). In each scenario the checker must pass with lost_stream=0 too: every
# committed event is in the stream at the end, not only applied (a consumer that applied an event
# before the stream lost it would hide the loss from every other figure).

def restore_lines(system) -> list[str]:
    return [line for r in system.services("outbox-relay") for line in
            nemeses.log_lines(r, nemeses.RESTORED)]


def under_writes(system, fault):
    """Runs fault() under 15 writes a second, with 20 acknowledged writes before and after it;
    returns (what it reported, the load, still running)."""
    load = LoadGen(system.api_url, threads=4, seed=SEED, rate=15).start()
    try:
        load.wait_ok(20, 30)
        ev = fault()
        print(ev)
        assert ev is not None, "the fault found no moment for it"
        load.wait_ok(len(load.ops) + 20, 30)
    except BaseException:
        load.stop()
        raise
    return ev, load


def test_store_rolled_back_under_writes_the_relay_publishes_what_the_stream_lost(systems):
    """nats-server's store copied aside under writes (while the server is SIGSTOPped for the copy),
    ten more events acknowledged and marked published, nats-server SIGKILLed and started on the
    older copy: the stream lost events it had acknowledged. The relay sees it on the reconnect,
    says so in one warning line and publishes them again; nothing is lost, nothing applied twice."""
    system = systems()
    ev, load = under_writes(system, lambda: nemeses.rollback_store(system, later=10))
    rep = finish(system, load, kills=1)
    assert rep.passed, rep.text()
    f = rep.figures
    assert f["lost"] == 0 and f["lost_stream"] == 0 and f["double"] == 0, rep.line()

    assert ev["lost_acked"] >= 10, ev
    assert "the stream went back to sequence" in ev["restore_line"], ev
    assert " warn " in ev["restore_line"], ev
    assert ev["restored_logged"] >= ev["lost_acked"], ev
    assert ev["restored_metric"] == ev["restored_logged"] and ev["restores"] == 1, ev
    assert ev["gap"] == 0, ev
    assert len(restore_lines(system)) == 1, restore_lines(system)


def test_stream_deleted_under_writes_is_created_again_and_the_consumer_follows(systems):
    """The stream deleted with nats-py under writes, the consumer's durable with it. The relay
    creates the stream again and publishes every kept row again (one warning line); the consumer
    creates its durable again with DeliverAll and applies what comes after, once."""
    system = systems()
    ev, load = under_writes(system, lambda: nemeses.delete_stream(system))
    rep = finish(system, load)
    assert rep.passed, rep.text()
    f = rep.figures
    assert f["lost"] == 0 and f["lost_stream"] == 0 and f["double"] == 0, rep.line()

    assert "the stream was missing" in ev["restore_line"] and " warn " in ev["restore_line"], ev
    assert ev["restored_logged"] >= ev["kept"] > 0, ev
    assert ev["restored_metric"] == ev["restored_logged"] and ev["restores"] == 1, ev
    assert ev["gap"] == 0, ev
    assert len(restore_lines(system)) == 1, restore_lines(system)
    assert ev["durable_deliver_policy"] == "all", ev
    # The new stream holds every committed event once: the kept rows and what came after.
    assert f["events"] == f["committed"] and f["dup_stream"] == 0, rep.line()


def test_stream_purged_under_writes_is_refilled_after_the_duplicate_window(systems):
    """The stream purged with nats-py under writes (duplicate window 2 s, as in the soak). The
    relay waits until JetStream has forgotten the purged events' ids, then publishes every kept
    row below the new first sequence again (one warning line); the durable goes on."""
    system = systems(extra_env={"outbox-relay": {"RELAY_DUPLICATE_WINDOW": "2s"}})
    ev, load = under_writes(system, lambda: nemeses.purge_stream(system))
    rep = finish(system, load)
    assert rep.passed, rep.text()
    f = rep.figures
    assert f["lost"] == 0 and f["lost_stream"] == 0 and f["double"] == 0, rep.line()

    assert "the stream was purged" in ev["restore_line"] and " warn " in ev["restore_line"], ev
    assert ev["purged"] > 0 and ev["restored_logged"] >= ev["kept"] > 0, ev
    assert ev["restored_metric"] == ev["restored_logged"] and ev["restores"] == 1, ev
    assert ev["gap"] == 0, ev
    assert len(restore_lines(system)) == 1, restore_lines(system)
