"""Renders bench/results/results.json as the Markdown table of bench/results/results.md."""
from __future__ import annotations


def _f(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(r: dict) -> str:
    m = r["machine"]
    s = r["scenarios"]
    out = ["# Benchmark results", "",
           f"Made by `make bench` on {m['date']}, commit {m['commit']}, host {m['host']}: "
           f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}. "
           f"{m['postgres']}; {m['nats_server']}; {m['ferretdb']}; {m['wrk']}.", "",
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
    if "2" in s:
        out += ["## 2. Cost of the outbox (pgbench, the same statement with and without the outbox row)", "",
                "| op | clients | with outbox /s | without /s | with / without | p50 ms with | p50 ms without |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for p in s["2"]["points"]:
            out.append(f"| {p['op']} | {p['clients']} | {_f(p['with_outbox'])} | "
                       f"{_f(p['without_outbox'])} | **{p['ratio']:.2f}** | "
                       f"{_f(p['with_outbox_p50_ms'], 2)} | {_f(p['without_outbox_p50_ms'], 2)} |")
        out.append("")
    if "3" in s:
        x = s["3"]
        out += [f"## 3. Relay drain of {x['rows']:,} outbox rows", "",
                "| what | rows/s | seconds |", "|---|---:|---:|",
                f"| outbox-relay | {_f(x['ours']['rows_per_s'])} | {_f(x['ours']['seconds'], 2)} |",
                f"| plain nats.c async publish loop | {_f(x['publish_loop']['rows_per_s'])} | "
                f"{_f(x['publish_loop']['seconds'], 2)} |",
                f"| claim-and-delete SQL in pgbench (batches of {x['batch']}) | "
                f"{_f(x['claim_delete_sql']['rows_per_s'])} | {_f(x['claim_delete_sql']['elapsed_s'], 2)} |",
                f"| **ours / min(both)** | **{x['ratio']:.2f}** | |", ""]
    if "4" in s:
        x = s["4"]
        out += [f"## 4. Consumer apply of {x['events']:,} events", "",
                "| what | events/s | seconds |", "|---|---:|---:|",
                f"| notification-consumer | {_f(x['ours']['events_per_s'])} | {_f(x['ours']['seconds'], 2)} |",
                f"| plain mongo-c-driver loop (upsert + history insert) | {_f(x['upsert_loop']['rate'])} | "
                f"{_f(x['upsert_loop']['seconds'], 2)} |",
                f"| fetch-and-ack-only loop | {_f(x['fetch_ack_loop']['rate'])} | "
                f"{_f(x['fetch_ack_loop']['seconds'], 2)} |",
                f"| **ours / upsert loop** | **{x['ratio']:.2f}** | |", ""]
    if "5" in s:
        x = s["5"]
        bp = r.get("baseline_parts", {})
        commit = None
        if "1" in s:
            commit = next((p["pgbench"]["p50_ms"] for p in s["1"]["points"]
                           if p["op"] == "POST" and p["clients"] == 1), None)
        rtt = bp.get("jetstream_rtt", {}).get("p50_ms")
        ups = bp.get("upsert", {}).get("p50_ms")
        parts = [v for v in (commit, rtt, ups) if v is not None]
        base = sum(parts) if len(parts) == 3 else None
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
    out.append(f"Total run time: {r.get('total_seconds')} s.")
    return "\n".join(out) + "\n"
