"""`make bench` at a tiny scale: every scenario runs against real servers and writes its table and
raw figures. It checks what a reader of bench/results relies on (every section, every baseline,
counts that add up), never a timing: a benchmark measures, it does not assert speed."""
import json
import os
import subprocess

import pytest

from harness import REPO_ROOT

KNOBS = {
    "BENCH_SCALE": "0.01",            # scenario 5's burst: 500 writes
    "BENCH_EVENT_USERS": "10",        # 1,000 outbox rows / events: versions 1 to 100 of 10 users,
    "BENCH_EVENT_VERSIONS": "100",    # so a batch holds several versions of a user
    "BENCH_FERRETDB_SIZES": "10,100",
    "BENCH_DURATION": "1",
    "BENCH_E2E_SECONDS": "1",
    "BENCH_PROFILE": "0",
}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, **KNOBS, "BENCH_OUT": str(out)}
    r = subprocess.run(["bash", "bench/run.sh"], cwd=REPO_ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, f"bench/run.sh exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return out, json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


@pytest.mark.timeout(900)
def test_every_scenario_has_its_figures_and_baselines(bench_run):
    _, r, _ = bench_run
    s = r["scenarios"]
    assert sorted(s) == ["1", "2", "3", "4", "5", "6"]
    assert r["machine"]["settings"]["BENCH_EVENT_USERS"] == 10
    # 1: every op at every concurrency, ours next to pgbench, answers counted.
    pts = {(p["op"], p["clients"]) for p in s["1"]["points"]}
    assert pts == {(op, c) for op in ("POST", "PUT") for c in (1, 16, 64)}
    for p in s["1"]["points"]:
        assert p["ours"]["rate"] > 0 and p["pgbench"]["rate"] > 0
        assert p["ours"]["non2xx"] == 0, p
        assert p["ratio"] == pytest.approx(p["ours"]["rate"] / p["pgbench"]["rate"], rel=0.01)
        # The CPU of each hop per request and per transaction, user and system apart.
        ours, base = p["ours"]["cpu_us_per_item"], p["pgbench"]["cpu_us_per_item"]
        assert set(ours) == {"user-api", "postgres", "nats-server", "wrk"}, p
        assert set(base) == {"postgres", "pgbench"}, p
        for v in (*ours.values(), *base.values()):
            assert v["total"] == pytest.approx(v["user"] + v["system"], abs=0.15), p
        assert ours["user-api"]["total"] > 0 and base["postgres"]["total"] > 0, p
        assert p["ours"]["cpu"]["wrk"] == pytest.approx(
            sum(p["ours"]["cpu"]["user_system_s"]["wrk"].values()), abs=0.015), p
        threads = p["ours"]["threads"]
        assert threads["items"] == p["ours"]["requests"] and threads["per_item"], p
        assert p["projection"]["user_api_rate"] >= p["ours"]["rate"], p
    x = s["1"]["pg_connections_experiment"]
    assert x.get("skipped") or x["rate"] > 0, x
    # 2: with and without the outbox row, for the same points.
    assert {(p["op"], p["clients"]) for p in s["2"]["points"]} == pts
    # 3: the relay drained every row into the stream; both baselines moved every row.
    x = s["3"]
    assert x["rows"] == 1000 and x["ours"]["stream_messages"] == 1000
    assert x["publish_loop"]["nacks"] == 0 and x["publish_loop"]["rows_per_s"] > 0
    assert x["claim_mark_sql"]["rows_per_s"] > 0
    assert x["batch"] == r["machine"]["settings"]["relay_batch_size"]
    assert x["relay_batch_2000_experiment"]["rows_per_s"] > 0
    assert x["relay_pipeline_1_experiment"]["rows_per_s"] > 0
    assert set(x["ours"]["cpu_us_per_item"]) == {"outbox-relay", "nats-server", "postgres"}
    assert set(x["publish_loop"]["cpu_us_per_item"]) == {"js_publish", "nats-server"}
    assert set(x["claim_mark_sql"]["cpu_us_per_item"]) == {"postgres", "pgbench"}
    # 4: every event applied by the consumer and by the plain loop, in the same batches and lanes;
    # the tenths and the CPU per event measured; FerretDB's cost by size.
    x = s["4"]
    assert x["events"] == 1000 and x["users"] == 10 and x["versions"] == 100
    up = x["upsert_loop"]
    assert up["events"] == 1000 and up["mode"] == 3
    assert up["lanes"] == x["lanes"] and up["batch"] == x["batch"]
    assert x["fetch_ack_loop"]["events"] == 1000
    for o in (x["ours"], up):
        assert 0 < o["first_tenth_mean_ms"] and 0 <= o["last_tenth_mean_ms"], o
        assert 0 <= o["updates_first_tenth_mean_ms"] and 0 <= o["updates_last_tenth_mean_ms"], o
    assert x["ours"]["cpu_us_per_event"]["notification-consumer"] > 0
    assert set(x["ours"]["cpu_us_per_item"]) == {"notification-consumer", "nats-server",
                                                 "ferretdb", "ferretdb-postgres"}
    assert up["cpu_us_per_event"]["ferretdb"] > 0
    assert x["ratio"] == pytest.approx(x["ours"]["events_per_s"] / up["rate"], rel=0.01)
    assert [c["documents"] for c in x["ferretdb_cost"]] == [10, 100]
    # 5: a sustained rate found in steps, then every load point with every write read back.
    sat = s["5"]["saturation"]
    assert sat["burst_writes"] > 0 and sat["steps"] and sat["sustained_rate"] > 0
    kept = [st["rate"] for st in sat["steps"] if st["kept_up"]]
    assert sat["sustained_rate"] == (max(kept) if kept else sat["steps"][-1]["rate"])
    # A sample of every tenth write read back at each load, and each write at half the rate.
    assert [(p["load"], p["every"]) for p in s["5"]["points"]] == \
        [(0.1, 10), (0.5, 10), (0.8, 10), (0.5, 1)]
    for p in s["5"]["points"]:
        assert p["posted"] == p["writes"] and p["failed"] == 0, p
        assert p["probed"] == -(-p["posted"] // p["every"]), p
        assert p["visible"] + p["not_visible"] == p["probed"], p
        assert 0 <= p["visible_p50_ms"] <= p["visible_p99_ms"] <= p["visible_max_ms"], p
        assert p["history"]["entries"] == p["posted"], p
    # 6: every process's CPU per event over scenario 5, the load generators' too.
    for name, p in s["6"]["processes"].items():
        assert set(p["cpu_us_per_event"]) == {"user", "system", "total"}, name
    assert "load generators" in s["6"]["processes"]


@pytest.mark.timeout(900)
def test_the_table_has_every_section_and_verdict(bench_run):
    _, _, md = bench_run
    for heading in ("## 1. API write path", "## 2. Cost of the outbox", "## 3. Relay drain",
                    "## 4. Consumer apply of 1,000 events", "## 5. Commit to visible",
                    "## 6. Memory and CPU", "## Goals and what limits them"):
        assert heading in md, heading
    for goal in ("Scenario 1, user-api at least 0.7 of pgbench for POST",
                 "Scenario 1, user-api at most 20 µs of CPU per POST", "Scenario 3, at least 0.7",
                 "Scenario 4, consumer apply at least 1,500 events/s",
                 "Scenario 4, the cost per event of the last tenth", "Scenario 4, at least 0.8",
                 "Scenario 5, commit to visible at half the rate"):
        line = next((ln for ln in md.splitlines() if goal in ln), None)
        assert line is not None, goal
        assert " met" in line or "not measured" in line, line
    assert "BENCH_EVENT_USERS=10" in md
    for table in ("CPU per request, µs (user / system)", "**Projection, computed from the CPU",
                  "user-api's threads during POST at 16 clients", "CPU per row, µs",
                  "CPU per event, µs, total (user / system)", "CPU µs per event (user / system)"):
        assert table in md, table
