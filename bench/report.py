"""Renders bench/results/results.json as the Markdown table of bench/results/results.md."""
from __future__ import annotations


def _f(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _us(d: dict | None) -> str:
    """CPU µs per item as "user / system" (– when not measured)."""
    if not d:
        return "–"
    return f"{d['user']:,.1f} / {d['system']:,.1f}"


def _us_total(d: dict | None) -> str:
    """CPU µs per item as "total (user / system)"."""
    if not d:
        return "–"
    return f"{d['total']:,.1f} ({_us(d)})"


def _busy(cpu: dict) -> str:
    """The share of the machine's cores busy during a run."""
    cap = cpu.get("machine_capacity_s")
    return f"{cpu['machine_busy_s'] / cap * 100:.0f} %" if cap else "–"


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
    cu, lu = o.get("cpu_us_per_item"), up.get("cpu_us_per_item")
    if cu and lu:
        fu = fa.get("cpu_us_per_item", {})
        out += ["CPU per event, µs, total (user / system): each process's CPU time over the run "
                "divided by the events (the fetch-and-ack loop's by the events of the whole "
                "stream it read):", "",
                "| process | the consumer's run | the plain loop's run | the fetch-and-ack loop's "
                "run |", "|---|---:|---:|---:|",
                f"| the client (notification-consumer / mongo_upsert / js_fetch_ack) | "
                f"{_us_total(cu.get('notification-consumer'))} | "
                f"{_us_total(lu.get('mongo_upsert'))} | {_us_total(fu.get('js_fetch_ack'))} |"]
        for name in ("nats-server", "ferretdb", "ferretdb-postgres"):
            out.append(f"| {name} | {_us_total(cu.get(name))} | {_us_total(lu.get(name))} | "
                       f"{_us_total(fu.get(name))} |")
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


def _scenario_1(x: dict, m: dict) -> list[str]:
    out = ["## 1. API write path vs pgbench running the same statement", "",
           "| op | clients | user-api /s | p50 ms | p99 ms | pgbench /s | p50 ms | p99 ms | "
           "ours / pgbench | user-api µs/request (user + sys) | postgres µs/tx, through user-api "
           "/ from pgbench |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in x["points"]:
        o, b = p["ours"], p["pgbench"]
        ou, bu = o.get("cpu_us_per_item", {}), b.get("cpu_us_per_item", {})
        api = ou.get("user-api")
        api_text = f"{api['user']:,.1f} + {api['system']:,.1f}" if api else "–"
        pg_text = f"{_f(ou.get('postgres', {}).get('total'))} / " \
                  f"{_f(bu.get('postgres', {}).get('total'))}"
        out.append(f"| {p['op']} | {p['clients']} | {_f(o['rate'])} | {_f(o['p50_ms'], 2)} | "
                   f"{_f(o['p99_ms'], 2)} | {_f(b['rate'])} | {_f(b['p50_ms'], 2)} | "
                   f"{_f(b['p99_ms'], 2)} | **{p['ratio']:.2f}** | {api_text} | {pg_text} |")
    out.append("")
    if all("cpu_us_per_item" in p["ours"] for p in x["points"]):
        out += ["CPU per request, µs (user / system): each process's CPU time over the run "
                "(`/proc/<pid>/stat`, PostgreSQL with all its backends; the load generator's "
                "rusage) divided by the requests wrk counted, or by the transactions pgbench "
                f"logged. Machine busy: the share of the {m['cores']} cores busy over the run "
                "(`/proc/stat`), whoever used them.", "",
                "| op | clients | user-api | postgres | nats-server | wrk | machine busy | "
                "postgres (pgbench's run) | pgbench | machine busy |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in x["points"]:
            o, b = p["ours"], p["pgbench"]
            ou, bu = o["cpu_us_per_item"], b["cpu_us_per_item"]
            out.append(f"| {p['op']} | {p['clients']} | {_us(ou.get('user-api'))} | "
                       f"{_us(ou.get('postgres'))} | {_us(ou.get('nats-server'))} | "
                       f"{_us(ou.get('wrk'))} | {_busy(o['cpu'])} | {_us(bu.get('postgres'))} | "
                       f"{_us(bu.get('pgbench'))} | {_busy(b['cpu'])} |")
        out.append("")
    if all(p.get("projection") for p in x["points"]):
        out += ["**Projection, computed from the CPU figures, not measured:** the rates on a "
                "machine where the load generator does not share the cores, each rate times "
                "`machine_busy_s / (machine_busy_s - the generator's CPU seconds)` (wrk for "
                "user-api, pgbench's client for pgbench), as if the generator's CPU had gone to "
                "the rest at the same cost per request. Valid only while the run is CPU-bound "
                "(the machine busy all the time); where it is not, as with one client, the rate "
                "is bounded by round trips and the projection overstates it.", "",
                "| op | clients | machine busy, user-api's / pgbench's run | "
                "user-api /s, projected | pgbench /s, projected | ours / pgbench, projected |",
                "|---|---:|---:|---:|---:|---:|"]
        for p in x["points"]:
            j = p["projection"]
            busy = " / ".join(f"{v * 100:.0f} %" if v is not None else "–"
                              for v in (j["user_api_busy_share"], j["pgbench_busy_share"]))
            ratio = f"{j['ratio']:.2f}" if j.get("ratio") is not None else "–"
            out.append(f"| {p['op']} | {p['clients']} | {busy} | {_f(j['user_api_rate'])} | "
                       f"{_f(j['pgbench_rate'])} | {ratio} |")
        out.append("")
    p16 = _point(x, "POST", 16)
    th = (p16 or {}).get("ours", {}).get("threads")
    if th and th.get("per_item"):
        out += ["user-api's threads during POST at 16 clients, per request "
                "(`/proc/<pid>/task/*/stat` and `status`, summed by thread name):", "",
                "| thread name | threads | user µs | system µs | voluntary context switches | "
                "involuntary context switches |", "|---|---:|---:|---:|---:|---:|"]
        for name, t in th["per_item"].items():
            out.append(f"| {name} | {t['threads']} | {_f(t['user_us'])} | {_f(t['system_us'])} | "
                       f"{_f(t['voluntary_switches'], 2)} | {_f(t['nonvoluntary_switches'], 2)} |")
        if th.get("threads_ended"):
            out.append(f"\n{th['threads_ended']} thread(s) ended during the run; their time is "
                       "not in the table.")
        out.append("")
    e = x.get("pg_connections_experiment")
    if e and e.get("skipped"):
        out += ["Experiment (POST, 64 clients, user-api with four times its default "
                f"USER_API_PG_CONNECTIONS): skipped, {e['skipped']}.", ""]
    elif e:
        api = e.get("cpu_us_per_item", {}).get("user-api")
        out += [f"Experiment (same run, POST, 64 clients): user-api with "
                f"USER_API_PG_CONNECTIONS={e['pg_connections']} (four times its default "
                f"{e['pg_connections_default']}) did {_f(e['rate'])}/s (p50 {_f(e['p50_ms'], 2)} "
                f"ms, p99 {_f(e['p99_ms'], 2)} ms"
                + (f", {api['total']:,.1f} µs of user-api CPU per request" if api else "")
                + f"), against {_f(e['default_rate'])}/s with the default; pgbench "
                f"{_f(e['pgbench_rate'])}/s. It runs after the table's points, on a larger users "
                "table.", ""]
    return out


def _scenario_3_cpu(x: dict) -> list[str]:
    """CPU per row of the drain and of each baseline."""
    o, pub, sql = (x["ours"].get("cpu_us_per_item"), x["publish_loop"].get("cpu_us_per_item"),
                   x["claim_mark_sql"].get("cpu_us_per_item"))
    if not o:
        return []
    pub, sql = pub or {}, sql or {}
    return ["CPU per row, µs (user / system): each process's CPU time over the run divided by the "
            "rows it moved (the relay's and the publish loop's from their start; the publish loop "
            "reads its rows before its clock starts, and that reading is in its CPU).", "",
            "| process | the relay's drain | plain publish loop | claim-and-mark SQL in pgbench |",
            "|---|---:|---:|---:|",
            f"| the client (outbox-relay / js_publish / pgbench) | {_us(o.get('outbox-relay'))} | "
            f"{_us(pub.get('js_publish'))} | {_us(sql.get('pgbench'))} |",
            f"| nats-server | {_us(o.get('nats-server'))} | {_us(pub.get('nats-server'))} | – |",
            f"| postgres (all backends) | {_us(o.get('postgres'))} | – | "
            f"{_us(sql.get('postgres'))} |",
            f"| all of them, µs per row | {_f(_sum_total(o))} | {_f(_sum_total(pub))} | "
            f"{_f(_sum_total(sql))} |", ""]


def _sum_total(per_item: dict) -> float | None:
    return sum(v["total"] for v in per_item.values()) if per_item else None


def _point(x: dict, op: str, clients: int) -> dict | None:
    return next((p for p in x["points"] if p["op"] == op and p["clients"] == clients), None)


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
           "`user_system_s`: the same in user and in system time, `machine_capacity_s` = wall "
           "time x cores; `cpu_us_per_item`: µs per request, row or event).", ""]
    if "1" in s:
        out += _scenario_1(s["1"], m)
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
                f"| plain nats.c async publish loop"
                + (f", at most {x['publish_loop']['window']:,} in flight"
                   if x["publish_loop"].get("window") else "")
                + f" | {_f(x['publish_loop']['rows_per_s'])} | "
                f"{_f(x['publish_loop']['seconds'], 2)} |",
                f"| claim-and-mark SQL in pgbench (batches of {x['batch']}) | "
                f"{_f(x['claim_mark_sql']['rows_per_s'])} | {_f(x['claim_mark_sql']['elapsed_s'], 2)} |",
                f"| **ours / min(both)** | **{x['ratio']:.2f}** | |", ""]
        if x["publish_loop"].get("nacks"):
            out += [f"**The publish loop's baseline is not valid in this run:** nats-server refused "
                    f"{x['publish_loop']['nacks']:,} of its {x['publish_loop']['rows']:,} messages "
                    f"(the first: {x['publish_loop'].get('first_nack') or 'no reason given'}), "
                    "and its rate counts them.", ""]
        out += _scenario_3_cpu(x)
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
                "Every process over the whole of scenario 5 (the burst, the steps and the load "
                "points), divided by the events the consumer applied; the load generators are wrk "
                "(the burst) and e2e_probe, with its reads.", "",
                "| process | peak RSS MB | CPU s | CPU s per 10,000 events | CPU µs per event "
                "(user / system) |", "|---|---:|---:|---:|---:|"]
        for name, p in x["processes"].items():
            out.append(f"| {name} | {_f(p.get('peak_rss_mb'))} | {_f(p['cpu_s'], 2)} | "
                       f"{_f(p['cpu_s_per_10k_events'], 2)} | {_us(p.get('cpu_us_per_event'))} |")
        if "3" in s:
            o = s["3"]["ours"]
            out.append(f"| outbox-relay, drain of scenario 3 | {_f(o['relay_peak_rss_mb'])} | "
                       f"{_f(o['cpu'].get('outbox-relay'), 2)} | {_f(o['relay_cpu_s_per_10k'], 2)} | "
                       f"{_us(o.get('cpu_us_per_item', {}).get('outbox-relay'))} |")
        if "4" in s:
            o = s["4"]["ours"]
            out.append(f"| notification-consumer, apply of scenario 4 | {_f(o['consumer_peak_rss_mb'])} | "
                       f"{_f(o['cpu'].get('notification-consumer'), 2)} | "
                       f"{_f(o['consumer_cpu_s_per_10k'], 2)} | "
                       f"{_us(o.get('cpu_us_per_item', {}).get('notification-consumer'))} |")
        out.append("")
    out += goals(r)
    out.append(f"Total run time: {r.get('total_seconds')} s.")
    return "\n".join(out) + "\n"


# Issue 11's goals for the consumer's apply and for commit to visible.
APPLY_RATE_GOAL = 1500          # events/s with 100,000 users in the copy
APPLY_GOAL_USERS = 100_000
TENTH_GROWTH_GOAL = 1.5         # last tenth's cost per event / first tenth's
LOOP_RATIO_GOAL = 0.8
VISIBLE_P50_GOAL_MS = 50
VISIBLE_P99_GOAL_MS = 250


# The goals of the performance issue for the write path.
API_RATIO_GOAL = 0.7            # user-api / pgbench, POST at 16 and at 64 clients
API_CPU_GOAL_US = 20            # user-api's CPU per POST at 16 clients, user + system


def _goals_1(r: dict, x: dict) -> list[str]:
    def ratios(op: str, key) -> str:
        return ", ".join(f"{key(p):.2f} at {c} clients" for c in (16, 64)
                         if (p := _point(x, op, c)) and key(p) is not None)

    post = [_point(x, "POST", c) for c in (16, 64)]
    if None in post:
        return [f"- Scenario 1, user-api at least {API_RATIO_GOAL} of pgbench for POST at 16 and "
                "at 64 clients: not measured.", ""]
    ok = all(p["ratio"] >= API_RATIO_GOAL for p in post)
    line = (f"- Scenario 1, user-api at least {API_RATIO_GOAL} of pgbench for POST at 16 and at "
            f"64 clients: {ratios('POST', lambda p: p['ratio'])}, {verdict(ok)}. PUT, shown "
            f"and not part of the goal: {ratios('PUT', lambda p: p['ratio'])}.")
    if all(p.get("projection") for p in post):
        line += (" Projected to a machine where the load generator does not share the cores "
                 "(computed from the CPU figures, valid only while the run is CPU-bound; see "
                 "the projection under scenario 1): POST "
                 f"{ratios('POST', lambda p: p['projection'].get('ratio'))}.")
    out = [line, ""]
    p16 = post[0]
    o, b = p16["ours"], p16["pgbench"]
    ou, bu = o.get("cpu_us_per_item", {}), b.get("cpu_us_per_item", {})
    api = ou.get("user-api")
    if not api:
        return out + [f"- Scenario 1, user-api at most {API_CPU_GOAL_US} µs of CPU per POST at "
                      "16 clients: not measured.", ""]
    out += [f"- Scenario 1, user-api at most {API_CPU_GOAL_US} µs of CPU per POST at 16 clients "
            f"(user + system, `/proc/<pid>/stat`): {api['total']:,.1f} µs ({api['user']:,.1f} "
            f"user + {api['system']:,.1f} system), {verdict(api['total'] <= API_CPU_GOAL_US)}.",
            ""]

    def us(d: dict, k: str) -> str:
        return f"{d[k]['total']:,.0f} µs" if k in d else "–"
    th = o.get("threads", {}).get("per_item", {})
    vol = sum(t["voluntary_switches"] or 0 for t in th.values())
    invol = sum(t["nonvoluntary_switches"] or 0 for t in th.values())
    e = x.get("pg_connections_experiment") or {}
    out += [f"- What limits scenario 1, POST at 16 clients: the machine was {_busy(o['cpu'])} busy "
            f"during user-api's run and {_busy(b['cpu'])} during pgbench's. PostgreSQL spent "
            f"{us(ou, 'postgres')} of CPU per write through user-api and {us(bu, 'postgres')} "
            f"from pgbench, and got {o['cpu']['postgres']:.1f} CPU seconds instead of "
            f"{b['cpu']['postgres']:.1f}: on the same {r['machine']['cores']} cores user-api "
            f"took {us(ou, 'user-api')} per request, wrk {us(ou, 'wrk')} (pgbench's own client "
            f"{us(bu, 'pgbench')} per transaction) and nats-server {us(ou, 'nats-server')} for "
            f"the nudge. {api['system'] / api['total'] * 100 if api['total'] else 0:.0f} % of "
            "user-api's CPU is system time (the kernel: sockets, wake-ups, scheduling)"
            + (f"; its threads switched context {vol:.1f} times per request waiting (voluntary) "
               f"and {invol:.1f} times preempted (involuntary), by thread in the table under "
               "scenario 1" if th else "")
            + (f". With four times its default PostgreSQL connections at 64 clients user-api did "
               f"{_f(e['rate'])}/s against {_f(e['default_rate'])}/s"
               if e.get("rate") is not None else "")
            + ".", ""]
    out += _profile_block(r, x.get("profile"))
    lines = _profile_section(r, x.get("user_api_profile"), "CPU samples by binary")
    if lines:
        out += [f"Profile of user-api alone ({x['user_api_profile']}, `perf record -g -p`, the "
                "extra POST run at 16 clients; share of user-api's own samples by binary, the "
                "kernel's as [kernel.kallsyms]; the file also splits them by thread, by symbol "
                "and by caller):", ""] + ["    " + ln for ln in lines[:8]] + [""]
    return out


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
        out += _goals_1(r, s["1"])
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
