"""`make bench` at a tiny scale: every scenario runs against real servers and writes its table and
raw figures. It checks what a reader of bench/results relies on (every section, every baseline,
counts that add up), never a timing: a benchmark measures, it does not assert speed."""
import json
import os
import subprocess

import pytest

from harness import REPO_ROOT

KNOBS = {
    "BENCH_SCALE": "0.01",            # 1,000 outbox rows / events
    "BENCH_EVENT_USERS": "10",
    "BENCH_UPSERT_EVENTS": "200",
    "BENCH_FERRETDB_SIZES": "10,100",
    "BENCH_DURATION": "1",
    "BENCH_E2E_EVENTS": "20",
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
    # 4: every event applied, the loop on the first events, FerretDB's cost by size.
    x = s["4"]
    assert x["events"] == 1000 and x["users"] == 10
    assert x["upsert_loop"]["events"] == 200
    assert x["fetch_ack_loop"]["events"] == 1000
    assert [c["documents"] for c in x["ferretdb_cost"]] == [10, 100]
    # 5: every load point, every event seen end to end.
    assert [p["load"] for p in s["5"]["points"]] == [0.1, 0.5, 0.8]
    for p in s["5"]["points"]:
        assert p["events"] >= 20, p  # wrk stops each thread after its share; some in flight finish
        ca = p["commit_to_apply"]
        assert 0 <= ca["p50_ms"] <= ca["p99_ms"] <= ca["max_ms"]


@pytest.mark.timeout(900)
def test_the_table_has_every_section_and_verdict(bench_run):
    _, _, md = bench_run
    for heading in ("## 1. API write path", "## 2. Cost of the outbox", "## 3. Relay drain",
                    "## 4. Consumer apply of 1,000 events", "## 5. End to end",
                    "## 6. Memory and CPU", "## Goals and what limits them"):
        assert heading in md, heading
    for goal in ("Scenario 1, at least 0.8", "Scenario 3, at least 0.7", "Scenario 4, at least 0.8",
                 "Scenario 5, p50 at most 2 times"):
        line = next((ln for ln in md.splitlines() if goal in ln), None)
        assert line is not None, goal
        assert "reached" in line or "not measured" in line, line
    assert "BENCH_EVENT_USERS=10" in md
