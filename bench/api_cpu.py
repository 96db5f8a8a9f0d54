"""user-api's CPU per request under wrk's POST load, thread by thread: the quick measure behind
the findings on user-api in docs/benchmarks.md, for trying one change at a time.

    .venv/bin/python bench/api_cpu.py                       # POST at 16 connections, 5 s, twice
    .venv/bin/python bench/api_cpu.py NATS_URL= USER_API_PG_CONNECTIONS=2 --conns 16,64
    .venv/bin/python bench/api_cpu.py --perf                # and a perf profile of user-api

Starts PostgreSQL and nats-server on free ports (the test harness), bin/user-api with the given
settings (LOG_LEVEL=warn unless given), and for each point prints the rate, and the CPU per
request of user-api (user and system, per thread name, with voluntary and involuntary context
switches), PostgreSQL (all backends), nats-server and wrk. It measures and asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench import harness  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("settings", nargs="*", help="NAME=VALUE settings of user-api")
    ap.add_argument("--conns", default="16", help="comma-separated wrk connections (16)")
    ap.add_argument("--seconds", type=int, default=5, help="per point (5)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per point (2)")
    ap.add_argument("--perf", action="store_true", help="perf record -g user-api for 4 s after")
    ap.add_argument("--syscalls", action="store_true",
                    help="count user-api's system calls per request for 4 s after (perf trace)")
    a = ap.parse_args()
    env = {"LOG_LEVEL": "warn"}
    for kv in a.settings:
        k, _, v = kv.partition("=")
        env[k] = v
    st = bench.Stack()
    try:
        pg = st.add(bench.new_pg())
        nats = st.add(harness.Nats())
        api = st.service("user-api", {**pg.env, "NATS_URL": nats.url, **env}, "USER_API_PORT")
        def pipeline():
            """user-api's pg_pipeline_* counters (transactions, statements by how they were
            sent)."""
            out = {}
            for line in bench.requests.get(api.url + "/metrics", timeout=10).text.splitlines():
                if line.startswith("pg_pipeline_"):
                    name, value = line.rsplit(" ", 1)
                    out[name] = float(value)
            return out

        for conns in (int(c) for c in a.conns.split(",")):
            for run in range(a.repeat):
                pipe0 = pipeline()
                threads = bench.ThreadMeter(api.pid).start()
                api0, pg0 = bench.cpu_times(api.pid), bench.cpu_tree_times(pg.pid)
                nats0 = bench.cpu_times(nats.pid)
                r = bench.wrk(api.url, "post.lua", conns, a.seconds,
                              env={"BENCH_RUN": f"cpu{conns}-{run}"})
                n = r["requests"] or 1
                api1 = bench.cpu_times(api.pid).minus(api0)
                pg1 = bench.cpu_tree_times(pg.pid).minus(pg0)
                nats1 = bench.cpu_times(nats.pid).minus(nats0)
                wrk1 = bench.generator_cpu(r)
                us = lambda c: f"{c.user * 1e6 / n:.1f} + {c.system * 1e6 / n:.1f} µs"  # noqa: E731
                print(f"POST at {conns} connections: {r['rate']:,.0f}/s ({r['non2xx']} not 2xx); "
                      f"per request: user-api {us(api1)}, postgres {us(pg1)}, nats-server "
                      f"{us(nats1)}, wrk {us(wrk1)} (user + system)", flush=True)
                pipe = {k: v - pipe0.get(k, 0) for k, v in pipeline().items()}
                tx = pipe.get("pg_pipeline_transactions_total", 0)
                grouped = pipe.get('pg_pipeline_statements_total{sent="grouped"}', 0)
                if tx:
                    print(f"    PostgreSQL: {tx:,.0f} transactions, {grouped / tx:.2f} grouped "
                          "statements each", flush=True)
                for name, t in threads.stop(n)["per_item"].items():
                    print(f"    {name:<12} x{t['threads']}: {t['user_us']:.1f} + "
                          f"{t['system_us']:.1f} µs, {t['voluntary_switches']:.2f} voluntary and "
                          f"{t['nonvoluntary_switches']:.2f} involuntary switches", flush=True)
        if a.perf:
            data = Path(tempfile.mkdtemp(prefix="api-cpu-perf-")) / "perf.data"
            p = subprocess.Popen(["perf", "record", "-g", "-F", "1999", "-p", str(api.pid), "-o",
                                  str(data), "--", "sleep", "4"], stderr=subprocess.DEVNULL)
            bench.wrk(api.url, "post.lua", 16, 5, env={"BENCH_RUN": "perf"})
            p.wait()
            print(f"profile: perf report -i {data} --no-children --sort dso,sym")
        if a.syscalls:
            out = Path(tempfile.mkdtemp(prefix="api-cpu-trace-")) / "trace.txt"
            p = subprocess.Popen(["perf", "trace", "-s", "-p", str(api.pid), "-o", str(out),
                                  "--", "sleep", "4"], stderr=subprocess.DEVNULL)
            r = bench.wrk(api.url, "post.lua", 16, 5, env={"BENCH_RUN": "trace"})
            p.wait()
            print(f"system calls over about 4 of {r['requests']:,} requests in 5 s: {out}")
            print(out.read_text())
    finally:
        st.close()


if __name__ == "__main__":
    os.environ.setdefault("BENCH_NICE", "5")
    main()
