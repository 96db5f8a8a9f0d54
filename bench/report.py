"""Renders bench/results/results.json as the Markdown table of bench/results/results.md."""
from __future__ import annotations


def _f(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _profile_section(r: dict, name: str | None, title: str) -> list[str]:
    """The non-empty lines of one "## title" section of a profile file of the run ([] without
    the file)."""
    if not name:
        return []
    try:
        from pathlib import Path
        text = (Path(r.get("out_dir", ".")) / name).read_text()
    except OSError:
        return []
    lines, keep = [], False
    for ln in text.splitlines():
        if ln.startswith("##"):
            if keep:
                break
            keep = ln[2:].strip().split(" (")[0] == title   # the title without its remark
            continue
        if keep and ln.strip():
            lines.append(ln.strip())
    return lines


def _profile_block(r: dict, name: str | None) -> list[str]:
    """The per-process part of a profile file written by the same run, as an indented block."""
    lines = _profile_section(r, name, "CPU samples per process")
    if not lines:
        return []
    return [f"Profile ({name}, `perf record -a`, share of all CPU samples of the machine; "
            "processes this scenario did not start, such as a FerretDB or pytest during scenarios "
            "1 and 3, are other test runs on the same machine):", ""] + \
        ["    " + ln for ln in lines[:8]] + [""]


def on_sqlite(r: dict) -> bool:
    """Whether the run's FerretDB kept its data in SQLite (results made before its PostgreSQL store
    was set up by deploy/ferretdb-store.sql), which the wording of scenario 4 depends on."""
    return "SQLite" in str(r["machine"].get("settings", {}).get("ferretdb", ""))


def markdown(r: dict) -> str:
    m = r["machine"]
    s = r["scenarios"]
    out = ["# Benchmark results", "",
           f"Made by `make bench` on {m['date']}, commit {m['commit']}, host {m['host']}: "
           f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}. "
           f"{m['postgres']}; {m['nats_server']}; FerretDB {m['ferretdb']}; {m['wrk']}.", "",
           f"Settings: {', '.join(f'{k}={v}' for k, v in m['settings'].items())}. "
           f"The load generators, the services and the servers all share these {m['cores']} cores; "
           "the CPU split of each run is in results.json (`cpu`: CPU seconds per process, "
           "`machine_capacity_s` = wall time x cores).", ""]
    if "1" in s:
        out += ["## 1. API write path vs pgbench running the same statement", "",
                "| op | clients | user-api /s | p50 ms | p99 ms | pgbench /s | p50 ms | p99 ms | ours / pgbench | CPU split (api / postgres / generator, s) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for p in s["1"]["points"]:
            o, b = p["ours"], p["pgbench"]
            cpu = o["cpu"]
            out.append(f"| {p['op']} | {p['clients']} | {_f(o['rate'])} | {_f(o['p50_ms'], 2)} | "
                       f"{_f(o['p99_ms'], 2)} | {_f(b['rate'])} | {_f(b['p50_ms'], 2)} | "
                       f"{_f(b['p99_ms'], 2)} | **{p['ratio']:.2f}** | "
                       f"{cpu.get('user-api')} / {cpu.get('postgres')} / {cpu.get('wrk')} of "
                       f"{cpu['machine_capacity_s']} |")
        out.append("")
        e = s["1"].get("threads_64_experiment")
        if e:
            out += [f"Experiment (same run, POST, 64 clients): user-api with USER_API_THREADS=64 "
                    f"(one PostgreSQL connection per client, as pgbench) did {_f(e['threads_64_rate'])}/s "
                    f"(p50 {_f(e['threads_64_p50_ms'], 2)} ms), against {_f(e['threads_8_rate'])}/s "
                    f"with the default 8 threads; pgbench {_f(e['pgbench_rate'])}/s. It runs after "
                    "the table's points, on a larger users table.", ""]
    if "2" in s:
        out += ["## 2. Cost of the outbox (pgbench, the same statement with and without the outbox row)", "",
                "| op | clients | with outbox /s | without /s | with / without | p50 ms with | p50 ms without |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for p in s["2"]["points"]:
            out.append(f"| {p['op']} | {p['clients']} | {_f(p['with_outbox'])} | "
                       f"{_f(p['without_outbox'])} | **{p['ratio']:.2f}** | "
                       f"{_f(p['with_outbox_p50_ms'], 2)} | {_f(p['without_outbox_p50_ms'], 2)} |")
        out.append("")
        e = s["2"].get("stable_functions_experiment")
        if e:
            out += ["Experiment (same run, 16 clients, POST): the JSON functions of migration 0004 "
                    "declared STABLE instead of IMMUTABLE, which lets PostgreSQL inline them:", "",
                    "| | IMMUTABLE (as migrated) /s | STABLE /s |", "|---|---:|---:|",
                    f"| pgbench, with outbox | {_f(e['pgbench_post_immutable'])} | {_f(e['pgbench_post'])} |",
                    f"| pgbench, without outbox | – | {_f(e['pgbench_post_no_outbox'])} |",
                    f"| user-api | {_f(e['user_api_post_immutable'])} | {_f(e['user_api_post'])} |", ""]
    if "3" in s:
        x = s["3"]
        out += [f"## 3. Relay drain of {x['rows']:,} outbox rows", "",
                "| what | rows/s | seconds |", "|---|---:|---:|",
                f"| outbox-relay, from its start | {_f(x['ours']['rows_per_s'])} | {_f(x['ours']['seconds'], 2)} |",
                f"| outbox-relay, from its first PubAck (not in the ratio) | "
                f"{_f(x['ours'].get('rows_per_s_after_first_ack'))} | "
                f"{_f(x['ours'].get('seconds_after_first_ack'), 2)} |",
                f"| plain nats.c async publish loop | {_f(x['publish_loop']['rows_per_s'])} | "
                f"{_f(x['publish_loop']['seconds'], 2)} |",
                f"| claim-and-mark SQL in pgbench (batches of {x['batch']}) | "
                f"{_f(x['claim_mark_sql']['rows_per_s'])} | {_f(x['claim_mark_sql']['elapsed_s'], 2)} |",
                f"| **ours / min(both)** | **{x['ratio']:.2f}** | |", ""]
        e = x.get("relay_batch_2000_experiment")
        if e:
            out += [f"Experiment (same run): the relay with RELAY_BATCH_SIZE=2000 drained "
                    f"{_f(e['rows_per_s'])} rows/s (the default is {x['batch']:,}: fewer rows "
                    "locked and republished after a failed batch).", ""]
        e = x.get("relay_pipeline_1_experiment")
        if e:
            out += [f"Experiment (same run): the relay with RELAY_PIPELINE=1, one batch at a time "
                    f"as before it pipelined, drained {_f(e['rows_per_s'])} rows/s.", ""]
        e = x.get("relay_nats_sync_default_experiment")
        if e:
            out += ["Every drain above is to a nats-server with deploy/nats-server.conf "
                    "(`sync_interval: always`: a PubAck only after the fsync). Experiment (same "
                    f"run): to a server on its default (a sync every 2 minutes) the relay drained "
                    f"{_f(e['rows_per_s'])} rows/s; that difference is the price of not losing "
                    "acknowledged events in a power failure.", ""]
    if "4" in s:
        x = s["4"]
        up = x["upsert_loop"]
        users = x.get("users")
        why = ("On FerretDB with SQLite a version-guarded update reads every document of the "
               "collection (see the goals below), so an event costs more the more users there are; "
               "with one user per event 100,000 events would take hours. ") if on_sqlite(r) else ""
        out += [f"## 4. Consumer apply of {x['events']:,} events", "",
                f"The events already in the stream are scenario 3's: versions 1, 2, 3... of "
                f"{_f(users, 0)} users in turn (BENCH_EVENT_USERS). {why}The plain upsert loop runs the first "
                f"{up['events']:,} of the same events (BENCH_UPSERT_EVENTS): its cost per event is "
                f"flat once every user exists ({_f(up.get('first_tenth_mean_ms'), 2)} ms per event "
                f"in its first tenth, {_f(up.get('last_tenth_mean_ms'), 2)} ms in its last). The "
                "fetch-and-ack loop reads the whole stream.", "",
                "| what | events | events/s | seconds |", "|---|---:|---:|---:|",
                f"| notification-consumer | {x['events']:,} | {_f(x['ours']['events_per_s'])} | "
                f"{_f(x['ours']['seconds'], 2)} |",
                f"| plain mongo-c-driver loop (upsert + history insert) | {up['events']:,} | "
                f"{_f(up['rate'])} | {_f(up['seconds'], 2)} |",
                f"| fetch-and-ack-only loop | {x['fetch_ack_loop']['events']:,} | "
                f"{_f(x['fetch_ack_loop']['rate'])} | {_f(x['fetch_ack_loop']['seconds'], 2)} |",
                f"| **ours / upsert loop** | | **{x['ratio']:.2f}** | |", ""]
        if x.get("ferretdb_cost"):
            out += ["FerretDB's cost of one update by the size of the collection (median of 100, "
                    "same run): the consumer's version-guarded filter, and a lone string `_id`, "
                    "the only filter FerretDB 1.24 hands to its SQLite backend.", "",
                    "| documents | `{_id: id, version: {$lt: v}}` ms | `{_id: \"id\"}` ms |",
                    "|---:|---:|---:|"]
            out += [f"| {c['documents']:,} | {_f(c['guarded_update_ms'], 2)} | "
                    f"{_f(c['string_id_update_ms'], 2)} |" for c in x["ferretdb_cost"]]
            out.append("")
    if "5" in s:
        x = s["5"]
        commit, rtt, ups = baseline_parts(r)
        base = baseline_sum(r)
        out += ["## 5. End to end: commit to visible in MongoDB (from the history's committed_at, "
                "published_at, applied_at)", "",
                f"Baseline sum: one commit {_f(commit, 2)} ms (pgbench POST, 1 client, p50) + one "
                f"JetStream round trip {_f(rtt, 2)} ms (sync publish, p50) + one upsert {_f(ups, 2)} ms "
                f"(upsert + history insert, p50) = **{_f(base, 2)} ms**.", "",
                "| load | target /s | achieved /s | events | commit→visible p50 / p99 / max ms | "
                "commit→published p50 / p99 ms | published→applied p50 / p99 ms | p50 / baseline |",
                "|---|---:|---:|---:|---|---|---|---:|"]
        for p in x["points"]:
            ca, cp, pa = p["commit_to_apply"], p["commit_to_publish"], p["publish_to_apply"]
            ratio = f"{ca['p50_ms'] / base:.1f}" if base and ca["p50_ms"] == ca["p50_ms"] else "–"
            out.append(f"| {int(p['load'] * 100)} % | {_f(p['target_rate'])} | {_f(p['achieved_rate'])} | "
                       f"{p['events']:,} | {_f(ca['p50_ms'], 1)} / {_f(ca['p99_ms'], 1)} / "
                       f"{_f(ca['max_ms'], 1)} | {_f(cp['p50_ms'], 1)} / {_f(cp['p99_ms'], 1)} | "
                       f"{_f(pa['p50_ms'], 1)} / {_f(pa['p99_ms'], 1)} | {ratio} |")
        out.append("")
    if "6" in s:
        x = s["6"]
        out += [f"## 6. Memory and CPU during scenario 5 ({x['events']:,} events end to end)", "",
                "| process | peak RSS MB | CPU s | CPU s per 10,000 events |", "|---|---:|---:|---:|"]
        for name, p in x["processes"].items():
            out.append(f"| {name} | {_f(p.get('peak_rss_mb'))} | {_f(p['cpu_s'], 2)} | "
                       f"{_f(p['cpu_s_per_10k_events'], 2)} |")
        if "3" in s:
            o = s["3"]["ours"]
            out.append(f"| outbox-relay, drain of scenario 3 | {_f(o['relay_peak_rss_mb'])} | "
                       f"{_f(o['cpu'].get('outbox-relay'), 2)} | {_f(o['relay_cpu_s_per_10k'], 2)} |")
        if "4" in s:
            o = s["4"]["ours"]
            out.append(f"| notification-consumer, apply of scenario 4 | {_f(o['consumer_peak_rss_mb'])} | "
                       f"{_f(o['cpu'].get('notification-consumer'), 2)} | "
                       f"{_f(o['consumer_cpu_s_per_10k'], 2)} |")
        out.append("")
    out += goals(r)
    out.append(f"Total run time: {r.get('total_seconds')} s.")
    return "\n".join(out) + "\n"


def kernel_share(r: dict, name: str | None, comm: str) -> float | None:
    """The share of a process's CPU samples spent in the kernel, from a profile file of the run."""
    total = kernel = 0.0
    for ln in _profile_section(r, name, "CPU samples per process and binary"):
        f = ln.split()
        if len(f) >= 3 and f[0].endswith("%") and f[1] == comm:
            share = float(f[0].rstrip("%"))
            total += share
            if f[2] == "[kernel.kallsyms]":
                kernel += share
    return kernel / total if total else None


def baseline_parts(r: dict):
    """One commit (pgbench POST, 1 client, p50), one JetStream round trip, one upsert (p50)."""
    s, bp = r["scenarios"], r.get("baseline_parts", {})
    commit = None
    if "1" in s:
        commit = next((p["pgbench"]["p50_ms"] for p in s["1"]["points"]
                       if p["op"] == "POST" and p["clients"] == 1), None)
    return commit, bp.get("jetstream_rtt", {}).get("p50_ms"), bp.get("upsert", {}).get("p50_ms")


def baseline_sum(r: dict):
    parts = baseline_parts(r)
    return sum(parts) if all(v is not None for v in parts) else None


def goals(r: dict) -> list[str]:
    """Each performance goal (docs/benchmarks.md): reached or not, and what limits it, with the profile of this run."""
    s = r["scenarios"]
    out = ["## Goals and what limits them", ""]
    if "1" in s:
        pts = [p for p in s["1"]["points"] if p["clients"] in (16, 64)]
        worst = min(p["ratio"] for p in pts)
        p16 = next(p for p in s["1"]["points"] if p["op"] == "POST" and p["clients"] == 16)
        o, b = p16["ours"], p16["pgbench"]
        n_o, n_b = o["rate"] * o["cpu"]["wall_s"], b["rate"] * b["cpu"]["wall_s"]
        pg_o = o["cpu"]["postgres"] / n_o * 1e6 if n_o else 0
        pg_b = b["cpu"]["postgres"] / n_b * 1e6 if n_b else 0
        api_us = o["cpu"]["user-api"] / n_o * 1e6 if n_o else 0
        nats_us = o["cpu"].get("nats-server", 0) / n_o * 1e6 if n_o else 0
        gen_us = o["cpu"].get("wrk", 0) / n_o * 1e6 if n_o else 0
        pgb_us = b["cpu"].get("pgbench", 0) / n_b * 1e6 if n_b else 0
        ks = kernel_share(r, s["1"].get("profile"), "MHD-worker")
        t = s["1"].get("threads_64_experiment")
        out += [f"- Scenario 1, at least 0.8 of pgbench at 16 and 64 clients: lowest ratio "
                f"{worst:.2f}, {'reached' if worst >= 0.8 else 'not reached'}. The machine is "
                "saturated in both runs (`machine_busy_s` close to `machine_capacity_s` in "
                "results.json) and PostgreSQL spends the same CPU per write either way "
                f"(POST at 16 clients: {pg_o:.0f} µs through user-api, {pg_b:.0f} µs from pgbench), "
                f"but through user-api it gets {o['cpu']['postgres']:.1f} CPU seconds instead of "
                f"{b['cpu']['postgres']:.1f}: user-api itself takes {api_us:.0f} µs of CPU per "
                f"request, wrk {gen_us:.0f} µs (pgbench's own client {pgb_us:.0f} µs) and "
                f"nats-server {nats_us:.0f} µs for the nudge, on the same 2 cores"
                + (f". {ks * 100:.0f} % of user-api's samples in the profile are in the kernel: "
                   "each request wakes a worker thread, which sends to PostgreSQL, sleeps until "
                   "the answer, and wakes wrk with the response (context switches and socket "
                   "wake-ups); its own code (HTTP parsing, JSON, validation) is the small rest"
                   if ks is not None else "")
                + ". The ratio is the CPU share left to PostgreSQL, a limit of this 2-core machine "
                "shared with the load generator rather than of a wait in user-api"
                + (f"; more worker threads do not help (64 threads: {t['threads_64_rate']:,.0f}/s, "
                   f"8 threads: {t['threads_8_rate']:,.0f}/s)" if t else "")
                + ". What would move it: fewer wake-ups per request, by sending the statements of "
                "several requests to PostgreSQL in one pipeline (libpq pipeline mode) from an "
                "event loop instead of one blocking round trip per worker.", ""]
        out += _profile_block(r, s["1"].get("profile"))
    if "3" in s:
        x = s["3"]
        c = x["ours"]["cpu"]
        work = sum(c.get(k, 0) for k in ("postgres", "nats-server", "outbox-relay"))
        cores = c["machine_capacity_s"] / c["wall_s"] if c.get("wall_s") else 0
        cap = x["rows"] / work * cores if work else None
        base = min(x["publish_loop"]["rows_per_s"], x["claim_mark_sql"]["rows_per_s"])
        settings = r.get("machine", {}).get("settings", {})
        busy = c["machine_busy_s"] / c["machine_capacity_s"] if c.get("machine_capacity_s") else 0
        out += [f"- Scenario 3, at least 0.7 of the smaller baseline: {x['ratio']:.2f}, "
                f"{'reached' if x['ratio'] >= 0.7 else 'not reached'}. The relay pipelines its "
                f"batches (RELAY_PIPELINE={settings.get('relay_pipeline', '?')}, batches of "
                f"{x['batch']:,}): PostgreSQL claims the next batch while JetStream acknowledges the "
                f"one before, and the machine was {busy * 100:.0f} % busy during the drain (from "
                "the relay's start, with its connecting and the last batch). CPU sets the "
                "ceiling: the drain took "
                f"{work:.2f} CPU seconds for {x['rows']:,} rows (PostgreSQL "
                f"{c.get('postgres', 0):.2f}, nats-server {c.get('nats-server', 0):.2f}, the relay "
                f"{c.get('outbox-relay', 0):.2f}), so even with both cores busy all the time it "
                f"could not pass {_f(cap, 0)} rows/s, "
                f"{cap / base:.2f} of the smaller baseline, and the idle share above is the rest of "
                "the gap; each baseline does half of that work "
                "(the SQL alone, or the publishing alone) with the machine to itself. The relay is "
                "never the bottleneck of the system: it drains far faster than user-api writes "
                "(scenario 1) and than the consumer applies (scenario 4).", ""]
        out += _profile_block(r, x["ours"].get("profile"))
    if "4" in s:
        x = s["4"]
        c = x["ours"]["cpu"]
        fcores = c.get("ferretdb", 0) / c["wall_s"] if c.get("wall_s") else 0
        ccores = c.get("notification-consumer", 0) / c["wall_s"] if c.get("wall_s") else 0
        verdict = (f"- Scenario 4, at least 0.8 of the plain upsert loop: {x['ratio']:.2f}, "
                   f"{'reached' if x['ratio'] >= 0.8 else 'not reached'}. ")
        if on_sqlite(r):
            out += [verdict + "Both are limited by "
                    f"FerretDB 1.24 on SQLite, which took {fcores:.1f} of the 2 cores during the "
                    f"consumer's run, the consumer {ccores:.2f}. FerretDB pushes a "
                    "filter down to SQLite only when it is a lone string or ObjectId `_id`, so the "
                    "version-guarded update (`_id` and `version: {$lt: v}`) reads and decodes every "
                    "document of the collection in Go; the profile shows FerretDB decoding JSON "
                    "documents and collecting garbage. The cost per event therefore grows with the "
                    "number of users, which is why the events belong to a fixed set of users. A real "
                    "MongoDB serves the same filter from the `_id` index.", ""]
        else:
            pcores = c.get("ferretdb-postgres", 0) / c["wall_s"] if c.get("wall_s") else 0
            out += [verdict + f"During the consumer's run FerretDB 1.24 took {fcores:.1f} of the "
                    f"2 cores and its PostgreSQL store {pcores:.1f}, the consumer {ccores:.2f}; "
                    "each event is a read by `_id` (served by the store's GIN index), a write and a "
                    "history insert, one round trip after the other.", ""]
        out += _profile_block(r, x["ours"].get("profile"))
    if "5" in s:
        base = baseline_sum(r)
        half = next((p for p in s["5"]["points"] if p["load"] == 0.5), None)
        ratio = half["commit_to_apply"]["p50_ms"] / base if base and half else None
        verdict = "not measured" if ratio is None else \
            f"{ratio:.1f} times, {'reached' if ratio <= 2 else 'not reached'}"
        out += [f"- Scenario 5, p50 at most 2 times the baseline sum at 50 % load: {verdict}. The "
                "consumer on FerretDB applies far fewer events per second than user-api accepts "
                "(scenario 4), so the events of every load point queue in the stream: published "
                "to applied is nearly all of the latency, commit to published stays a few "
                "milliseconds.", ""]
    return out


if __name__ == "__main__":
    # Renders results.md again from results.json (default: bench/results), e.g. after a change of
    # the wording here: python3 bench/report.py [results folder]
    import json
    import sys
    from pathlib import Path
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results")
    data = json.loads((folder / "results.json").read_text())
    data["out_dir"] = str(folder)
    (folder / "results.md").write_text(markdown(data))
    print(f"wrote {folder / 'results.md'}")
