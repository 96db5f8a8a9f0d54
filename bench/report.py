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


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def _events_text(x: dict) -> str:
    """What scenario 4's events are, in words."""
    users, versions = x["users"], x.get("versions", 0)
    parts = [f"version 1 of each of the {users:,} users (`user_created`)"]
    if versions >= 2:
        parts.append("then version 2 of each (`user_updated`)")
    if versions >= 3:
        parts.append(f"and so on up to version {versions}")
    applied = "" if x["events"] == users * versions else \
        f"; the consumer and the loop apply the first {x['events']:,} (BENCH_APPLY_EVENTS)"
    return ", ".join(parts) + f": {users * versions:,} events in the stream{applied}"


def _tenths(o: dict, prefix: str = "") -> str:
    a, b = o.get(prefix + "first_tenth_mean_ms"), o.get(prefix + "last_tenth_mean_ms")
    if not a or b is None:
        return "–"
    return f"{a:.3f} → {b:.3f} ({b / a:.2f}x)"


def _scenario_4(r: dict, x: dict) -> list[str]:
    o, up, fa = x["ours"], x["upsert_loop"], x["fetch_ack_loop"]
    lanes = x.get("lanes", 1)
    if x.get("lanes_set"):
        lanes_how = f"CONSUMER_LANES={x['lanes_set']} from BENCH_CONSUMER_LANES"
    elif x.get("lanes_default"):
        lanes_how = f"CONSUMER_LANES={lanes}, its default"
    else:
        lanes_how = "no CONSUMER_LANES setting: one lane"
    out = [f"## 4. Consumer apply of {x['events']:,} events, {x['users']:,} users", "",
           f"The events: {_events_text(x)}. The consumer starts on an empty FerretDB with its "
           f"defaults (CONSUMER_BATCH={x.get('batch')}, {lanes_how}); the clock runs from its start "
           "until `consumer_events_applied_total` reaches the last event. The plain loop "
           "(`bench/bin/mongo_upsert`, mode 3) makes the same bulk writes for the same events on a "
           f"fresh FerretDB set up the same way: {up.get('lanes')} "
           f"lane{'s' if up.get('lanes') != 1 else ''} (a thread and a client each, the consumer's "
           f"hash of the user id), each taking its users' events in batches of up to "
           f"{up.get('batch')}, written in rounds of one event per user: an ordered bulk of "
           f"update_one (at most {up.get('bulk_max')} per bulk), then an unordered bulk insert of "
           "the round's history "
           "entries. The cost per event of a tenth is the wall time in which that tenth of the "
           "events was applied, divided by its events: the consumer's first tenth from its first "
           "applied event, the loop's from its start (connected, indexes made).", "",
           "The last column takes the events after the first "
           f"{x['users']:,} applied (the updates) alone, their first and last tenth; the lanes "
           "do not finish their creations together, so the first tenth of the updates still holds "
           "some of the last creations, and a small run's first tenth is mostly that overlap.", "",
           "| what | events | events/s | ms per event, first → last tenth | seconds | "
           "the updates alone |",
           "|---|---:|---:|---|---:|---|",
           f"| notification-consumer | {o['events']:,} | {_f(o['events_per_s'])} | {_tenths(o)} | "
           f"{_f(o['seconds'], 2)} | {_tenths(o, 'updates_')} |",
           f"| plain mongo-c-driver loop, the same bulk writes | {up['events']:,} | {_f(up['rate'])} | "
           f"{_tenths(up)} | {_f(up['seconds'], 2)} | {_tenths(up, 'updates_')} |",
           f"| fetch-and-ack-only loop (batches of 64, applies nothing) | {fa['events']:,} | "
           f"{_f(fa['rate'])} | | {_f(fa['seconds'], 2)} | |",
           f"| **ours / plain loop** | | **{x['ratio']:.2f}** | | | |", ""]
    cu, lu = o.get("cpu_us_per_event", {}), up.get("cpu_us_per_event", {})
    if cu or lu:
        out += ["CPU per event, µs (each process's CPU seconds over the run / events):", "",
                "| process | the consumer's run | the plain loop's run |", "|---|---:|---:|",
                f"| the writer (notification-consumer / mongo_upsert) | "
                f"{_f(cu.get('notification-consumer'))} | {_f(lu.get('mongo_upsert'))} |"]
        for name in ("nats-server", "ferretdb", "ferretdb-postgres"):
            out.append(f"| {name} | {_f(cu.get(name))} | {_f(lu.get(name)) if name in lu else '–'} |")
        out.append("")
    if o.get("apply_errors"):
        out += [f"The consumer counted {o['apply_errors']:,.0f} failed attempts to apply "
                "(`consumer_apply_errors_total`) during the run.", ""]
    if x.get("ferretdb_cost"):
        out += ["FerretDB's cost of one update by the size of the collection (median of 100, "
                "same run): the version-guarded filter, and a lone string `_id`.", "",
                "| documents | `{_id: id, version: {$lt: v}}` ms | `{_id: \"id\"}` ms |",
                "|---:|---:|---:|"]
        out += [f"| {c['documents']:,} | {_f(c['guarded_update_ms'], 2)} | "
                f"{_f(c['string_id_update_ms'], 2)} |" for c in x["ferretdb_cost"]]
        out.append("")
    return out


def _scenario_5(x: dict) -> list[str]:
    sat = x["saturation"]
    every = x.get("probe_every", 1)
    which = "each write" if every == 1 else f"every {every}th write"
    steps = "; ".join(f"{_f(st['rate'], 0)}/s {'kept up' if st['kept_up'] else 'fell behind'} "
                      f"(applied {_f(st['applied_rate_second_half'], 0)}/s)"
                      for st in sat.get("steps", []))
    out = ["## 5. Commit to visible, write by write", "",
           "The rate the pipeline sustains, measured first on the same stack (user-api, "
           f"outbox-relay, notification-consumer): a burst of {sat['burst_writes']:,} POSTs (wrk, "
           f"{sat['connections']} connections, no pause) was applied at "
           f"{_f(sat['burst_applied_rate'])}/s, from the first applied to the last. From that rate "
           f"in steps of 10 %, writes paced for {sat['step_seconds']} s (none read back), down "
           "until a step keeps up or up while steps keep up; a step keeps up when the consumer "
           "applied, over its second half, at least 95 % of the rate written: "
           f"{steps}. Sustained, the highest step that kept up: "
           f"**{_f(sat['sustained_rate'])} writes/s**"
           + ("" if sat.get("kept_up") else " (no step kept up: the slowest step's rate, which "
                                            "the pipeline did not sustain)") + ".", "",
           f"Each load point is a fraction of that rate for {x['seconds_per_point']:g} s: "
           f"`bench/bin/e2e_probe` sends every POST when it is due ({x.get('probe_threads', 128)} "
           "threads) and, after the "
           f"answer, reads {which} back with the consumer's waiting read "
           "(`GET /notifications/user/{id}?min_version={version}&wait=5s`), which answers as soon "
           "as the copy holds that version. Commit to visible is the time from the POST's answer "
           "(the commit) to that read's answer, one read round trip included; a 504 would count "
           "with its time. A waiting read costs FerretDB two or three reads of the copy, more "
           "than the write it waits for costs in a bulk, so the load points read back a "
           "systematic sample"
           + (", and the last row, at half the rate, reads back each write: what those reads "
              "cost" if any(p.get("every") == 1 for p in x["points"]) and every != 1 else "")
           + ". The last two columns come from the history entries of all the point's writes "
           "(the outbox row's created_at, the relay's published_at, the consumer's applied_at).",
           "",
           "| load | read back | target /s | achieved /s | writes | visible / read back | "
           "commit→visible p50 / "
           "p99 / max ms | POST p50 / p99 ms | sent > 10 ms late | commit→published p50 / p99 ms | "
           "published→applied p50 / p99 ms |",
           "|---|---|---:|---:|---:|---:|---|---|---:|---|---|"]
    for p in x["points"]:
        h = p.get("history", {})
        cp, pa = h.get("commit_to_publish", {}), h.get("publish_to_apply", {})
        rb = "each" if p.get("every", 1) == 1 else f"every {p['every']}th"
        out.append(f"| {int(p['load'] * 100)} % | {rb} | {_f(p['target_rate'])} | "
                   f"{_f(p['achieved_rate'])} | "
                   f"{p['posted']:,} | {p['visible']:,} / {p['probed']:,} | "
                   f"{_f(p['visible_p50_ms'], 1)} / {_f(p['visible_p99_ms'], 1)} / "
                   f"{_f(p['visible_max_ms'], 1)} | {_f(p['post_p50_ms'], 2)} / "
                   f"{_f(p['post_p99_ms'], 2)} | {p['late_over_10ms']:,} | "
                   f"{_f(cp.get('p50_ms'), 1)} / {_f(cp.get('p99_ms'), 1)} | "
                   f"{_f(pa.get('p50_ms'), 1)} / {_f(pa.get('p99_ms'), 1)} |")
    out.append("")
    return out


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
        out += _scenario_4(r, s["4"])
    if "5" in s:
        out += _scenario_5(s["5"])
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


# Issue 11's goals for the consumer's apply and for commit to visible.
APPLY_RATE_GOAL = 1500          # events/s with 100,000 users in the copy
APPLY_GOAL_USERS = 100_000
TENTH_GROWTH_GOAL = 1.5         # last tenth's cost per event / first tenth's
LOOP_RATIO_GOAL = 0.8
VISIBLE_P50_GOAL_MS = 50
VISIBLE_P99_GOAL_MS = 250


def _tenths_text(x: dict) -> str:
    """What the first and the last tenth of scenario 4's events do, when each is of one kind."""
    tenth, users = max(1, x["events"] // 10), x["users"]
    if tenth > users or x["events"] - tenth < users:
        return ""
    return ("The first tenth creates users in an empty collection, the last updates users of a "
            f"collection of {users:,} (an update's read finds a document to match and rewrite, "
            "where a creation's finds none and inserts). ")


def _goals_4(r: dict, x: dict) -> list[str]:
    o, up = x["ours"], x["upsert_loop"]
    c = o["cpu"]
    wall = c.get("wall_s") or 0
    cores = {k: c.get(k, 0) / wall if wall else 0
             for k in ("notification-consumer", "ferretdb", "ferretdb-postgres")}
    size = "" if x["users"] >= APPLY_GOAL_USERS else \
        (f" (measured with {x['users']:,} users, not the {APPLY_GOAL_USERS:,} the goal names: "
         "a scaled run)")
    out = [f"- Scenario 4, consumer apply at least {APPLY_RATE_GOAL:,} events/s with "
           f"{APPLY_GOAL_USERS:,} users in the copy: {_f(o['events_per_s'])} events/s, "
           f"{verdict(o['events_per_s'] >= APPLY_RATE_GOAL)}{size}.", ""]
    a, b = o.get("first_tenth_mean_ms"), o.get("last_tenth_mean_ms")
    if a and b is not None:
        out += [f"- Scenario 4, the cost per event of the last tenth at most {TENTH_GROWTH_GOAL}x "
                f"the first: {a:.3f} ms → {b:.3f} ms per event ({1e3 / a:,.0f} → {1e3 / b:,.0f} "
                f"events/s), {b / a:.2f}x, {verdict(b / a <= TENTH_GROWTH_GOAL)}{size}. "
                + _tenths_text(x)
                + f"The plain loop's tenths, the same events: {_tenths(up)}."
                + (f" The updates alone, first → last tenth of them: {_tenths(o, 'updates_')} "
                   f"(the plain loop: {_tenths(up, 'updates_')})."
                   if o.get("updates_first_tenth_mean_ms") else ""), ""]
    else:
        out += [f"- Scenario 4, the cost per event of the last tenth at most {TENTH_GROWTH_GOAL}x "
                "the first: not measured.", ""]
    out += [f"- Scenario 4, at least {LOOP_RATIO_GOAL} of a plain mongo-c-driver loop making the "
            f"same bulk writes: {_f(o['events_per_s'])} / {_f(up['rate'])} = {x['ratio']:.2f}, "
            f"{verdict(x['ratio'] >= LOOP_RATIO_GOAL)}. During the consumer's run FerretDB 1.24 "
            f"took {cores['ferretdb']:.2f} of the {r['machine']['cores']} cores, its PostgreSQL "
            f"store {cores['ferretdb-postgres']:.2f}, the consumer "
            f"{cores['notification-consumer']:.2f}. FerretDB runs every update of a bulk as a "
            "read of the document by `_id` (the store's GIN index) and a write, one after the "
            "other, and every history entry as an insert maintaining two indexes.", ""]
    out += _profile_block(r, o.get("profile"))
    return out


def _goals_5(x: dict) -> list[str]:
    every = x.get("probe_every", 1)
    half = next((p for p in x["points"] if p["load"] == 0.5 and p.get("every", 1) == every), None)
    each = next((p for p in x["points"] if p["load"] == 0.5 and p.get("every", 1) == 1), None)
    if half is None or not half.get("probed"):
        return [f"- Scenario 5, commit to visible at half the sustained rate, p50 at most "
                f"{VISIBLE_P50_GOAL_MS} ms and p99 at most {VISIBLE_P99_GOAL_MS} ms: not measured.",
                ""]
    p50, p99 = half["visible_p50_ms"], half["visible_p99_ms"]
    ok = p50 <= VISIBLE_P50_GOAL_MS and p99 <= VISIBLE_P99_GOAL_MS and half["not_visible"] == 0
    h = half.get("history", {})
    pa = h.get("publish_to_apply", {}).get("p50_ms")
    cp = h.get("commit_to_publish", {}).get("p50_ms")
    unsustained = "" if x["saturation"].get("kept_up", True) else \
        ", a rate no step kept up with"
    which = "each write" if every == 1 else f"every {every}th write"
    line = (f"- Scenario 5, commit to visible at half the rate the pipeline sustains "
            f"({_f(x['saturation']['sustained_rate'])}/s{unsustained}, so "
            f"{_f(half['target_rate'])} writes/s, {_f(half['achieved_rate'])} achieved), p50 at "
            f"most {VISIBLE_P50_GOAL_MS} ms and p99 at most {VISIBLE_P99_GOAL_MS} ms: p50 "
            f"{_f(p50, 1)} ms, p99 {_f(p99, 1)} ms over {half['probed']:,} writes read back "
            f"({which}; {half['not_visible']:,} not visible within the wait), {verdict(ok)}. Of "
            f"all the point's writes, commit to published took {_f(cp, 1)} ms at the median and "
            f"published to applied {_f(pa, 1)} ms (history entries).")
    if each is not None and each is not half:
        line += (f" Reading back each write at the same rate: p50 {_f(each['visible_p50_ms'], 1)} "
                 f"ms, p99 {_f(each['visible_p99_ms'], 1)} ms, "
                 f"{_f(each['achieved_rate'])} writes/s achieved: the reads' own load.")
    return [line, ""]


def goals(r: dict) -> list[str]:
    """Each performance goal (docs/benchmarks.md): met or not, with the numbers and what limits
    it, and the profile of this run."""
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
                f"{worst:.2f}, {verdict(worst >= 0.8)}. The machine is "
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
                f"{verdict(x['ratio'] >= 0.7)}. The relay pipelines its "
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
        out += _goals_4(r, s["4"])
    if "5" in s:
        out += _goals_5(s["5"])
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
