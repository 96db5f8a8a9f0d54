"""The benchmarks (docs/benchmarks.md): every hop measured next to a baseline of the same machine,
in one run.

Starts its own PostgreSQL, nats-server and FerretDB on free ports in temporary folders (the
integration harness, test/integration/harness.py) and the binaries of bin/, runs the scenarios,
and writes bench/results/results.json (raw figures) and bench/results/results.md (the table).
It measures and reports; it asserts no timings. Run it through `make bench` (bench/run.sh).

Knobs (environment): BENCH_SCALE (1 = 100,000 events in scenarios 3 and 4), BENCH_EVENT_USERS (the
users those events belong to, default 100), BENCH_APPLY_EVENTS (events of scenario 4, default all
of scenario 3's stream), BENCH_UPSERT_EVENTS (events of its upsert loop, default 10,000),
BENCH_FERRETDB_SIZES (collection sizes of FerretDB's cost table, default 10,1000,10000),
BENCH_DURATION
(seconds per load point of scenarios 1, 2 and 5, default 5), BENCH_NICE (niceness of the load
generators, default 5), BENCH_ONLY (comma-separated scenario numbers), BENCH_OUT (results folder).
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "integration"))
import harness  # noqa: E402

import requests  # noqa: E402

BENCH = ROOT / "bench"
TOOLS = BENCH / "bin"
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
# The events of scenarios 3 and 4 are versions 1, 2, 3... of this many users, round robin. The
# default of 100 dates from FerretDB's SQLite store, where a version-guarded update read every
# document of the collection, so the cost of an event grew with the number of users; on the
# PostgreSQL store the harness now runs (deploy/ferretdb-store.sql) it stays flat
# (bench/ferretdb_store.py, docs/benchmarks.md).
USERS = int(os.environ.get("BENCH_EVENT_USERS", "100"))
# Scenario 4 applies this many events of scenario 3's stream (0: all of them). Its plain upsert
# loop runs on the first BENCH_UPSERT_EVENTS of the same events: its cost per event is flat once
# every user exists (the report shows its first and last tenth), and the whole stream would
# double the longest part of the run.
APPLY_EVENTS = int(os.environ.get("BENCH_APPLY_EVENTS", "0"))
UPSERT_EVENTS = int(os.environ.get("BENCH_UPSERT_EVENTS", "10000"))
# Collection sizes of FerretDB's cost-per-update table (scenario 4).
FERRETDB_SIZES = [int(x) for x in os.environ.get("BENCH_FERRETDB_SIZES", "10,1000,10000").split(",")
                  if x.strip()]
# Scenario 5: writes per load point, at the target rate (the consumer is far slower than the API).
E2E_EVENTS = int(os.environ.get("BENCH_E2E_EVENTS", "300"))
DURATION = int(os.environ.get("BENCH_DURATION", "5"))
NICE = int(os.environ.get("BENCH_NICE", "5"))
ONLY = {s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()}
OUT = Path(os.environ.get("BENCH_OUT", BENCH / "results"))
CLK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
CONCURRENCY = (1, 16, 64)
PUT_USERS = 1000

results: dict = {"scenarios": {}}


def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wanted(n: int) -> bool:
    return not ONLY or str(n) in ONLY


# --- /proc -----------------------------------------------------------------------------------------

def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process, all its threads."""
    try:
        st = _stat(pid)
    except OSError:
        return 0.0
    return (int(st[11]) + int(st[12])) / CLK


def cpu_tree_s(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live children (PostgreSQL's backends)."""
    try:
        st = _stat(pid)
    except OSError:
        return 0.0
    total = (int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])) / CLK
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                s = _stat(int(d))
                if int(s[1]) == pid:
                    total += (int(s[11]) + int(s[12])) / CLK
            except (OSError, IndexError, ValueError):
                pass
    return total


def peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class CpuMeter:
    """CPU seconds spent by named processes between start() and stop(), as shares of the machine."""

    def __init__(self, procs: dict):
        self.procs = procs  # name -> (pid, tree?)

    def _sample(self):
        return {n: (cpu_tree_s(p) if tree else cpu_s(p)) for n, (p, tree) in self.procs.items()}

    def start(self):
        self.t0, self.c0, self.busy0 = time.monotonic(), self._sample(), machine_busy_s()
        return self

    def stop(self, extra: dict | None = None) -> dict:
        # A backend whose client just left may not be reaped yet: its time would be missed.
        time.sleep(0.2)
        wall = time.monotonic() - self.t0
        c1 = self._sample()
        out = {n: round(c1[n] - self.c0[n], 2) for n in c1}
        out.update({k: round(v, 2) for k, v in (extra or {}).items()})
        busy = machine_busy_s() - self.busy0
        out["wall_s"] = round(wall, 2)
        out["machine_capacity_s"] = round(wall * NCPU, 2)
        out["machine_busy_s"] = round(busy, 2)
        # Whatever else ran on the machine meanwhile (other users' processes).
        out["other_processes_s"] = round(max(0.0, busy - sum(v for k, v in out.items()
                                                               if k not in ("wall_s", "machine_capacity_s", "machine_busy_s"))), 2)
        out["loadavg_1m_after"] = float(open("/proc/loadavg").read().split()[0])
        return out


def machine_busy_s() -> float:
    """CPU seconds all cores spent on anything but idle and iowait since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK


def run_child(argv: list[str], env: dict | None = None, nice: bool = True,
              timeout: float = 600) -> tuple[str, str, float]:
    """Runs a load generator (niced); returns stdout, stderr and its CPU seconds (rusage)."""
    if nice:
        argv = ["nice", "-n", str(NICE), *argv]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})})
    out, err = p.communicate(timeout=timeout)
    # communicate() reaped it: the children's rusage of this process grew by its CPU time.
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{out}\n{err}")
    return out, err, 0.0


def child_cpu() -> float:
    r = os.times()
    return r.children_user + r.children_system


# --- load generators -------------------------------------------------------------------------------

def wrk(url: str, script: str, conns: int, duration: int, env: dict | None = None) -> dict:
    threads = min(conns, NCPU)
    c0 = child_cpu()
    out, err, _ = run_child(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s",
                             "--latency", "-s", str(BENCH / "lua" / script), url], env=env)
    cpu = child_cpu() - c0
    m = re.search(r"^BENCH (\{.*\})$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no figures:\n{out}\n{err}")
    r = json.loads(m.group(1))
    ok = r["requests"] - r["non2xx"]
    r["rate"] = round(ok / r["seconds"], 1) if r["seconds"] else 0
    r["generator_cpu_s"] = round(cpu, 2)
    return r


def pgbench(pg: harness.Postgres, script: str, clients: int, duration: int | None = None,
            transactions: int | None = None, defines: dict | None = None) -> dict:
    logdir = Path(tempfile.mkdtemp(prefix="bench-pgbench-"))
    argv = [os.path.join(harness.tool("PG_BIN"), "pgbench"), "-n", "-M", "prepared",
            "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.USER, "-c", str(clients),
            "-j", str(min(clients, NCPU)), "-f", str(BENCH / "sql" / script), "-l",
            "--log-prefix", str(logdir / "tx")]
    argv += ["-T", str(duration)] if transactions is None else ["-t", str(transactions)]
    for k, v in (defines or {}).items():
        argv += ["-D", f"{k}={v}"]
    argv.append(pg.DB)
    c0 = child_cpu()
    out, err, _ = run_child(argv, env={"PGPASSWORD": pg.PASSWORD})
    cpu = child_cpu() - c0
    lat = []
    for f in logdir.iterdir():
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]) / 1000.0)
    shutil.rmtree(logdir, ignore_errors=True)
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", out).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out)
    lat.sort()
    return {"rate": round(tps, 1), "transactions": len(lat),
            "failed": int(failed.group(1)) if failed else 0,
            "p50_ms": round(pct(lat, 50), 4), "p99_ms": round(pct(lat, 99), 4),
            "max_ms": round(lat[-1], 4) if lat else None, "generator_cpu_s": round(cpu, 2)}


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


class Profile:
    """A machine-wide `perf record` while a scenario runs, for at most `seconds`; the summary (CPU
    per process and the top symbols) goes to <OUT>/profile-<name>.txt. Skipped when perf is
    missing or BENCH_PROFILE=0."""

    def __init__(self, name: str, seconds: float, hz: int = 199):
        self.name, self.proc = name, None
        if os.environ.get("BENCH_PROFILE", "1") == "0" or not shutil.which("perf"):
            return
        self.data = Path(tempfile.mkdtemp(prefix="bench-perf-")) / "perf.data"
        self.proc = subprocess.Popen(["perf", "record", "-a", "-g", "-F", str(hz), "-o", str(self.data),
                                      "--", "sleep", str(seconds)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self) -> str | None:
        """Ends the recording (early, when the scenario ended first) and writes the summary."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)   # perf stops its workload and writes its data
        self.proc.wait()
        parts = []
        for title, args in (("CPU samples per process", ["--sort", "comm", "--percent-limit", "1"]),
                            ("CPU samples per process and binary (the kernel's share is "
                             "[kernel.kallsyms])", ["--sort", "comm,dso", "--percent-limit", "0.5"]),
                            ("Top symbols (self time, by process)",
                             ["--sort", "comm,dso,sym", "--percent-limit", "0.7"])):
            r = subprocess.run(["perf", "report", "-i", str(self.data), "--stdio", "--no-children",
                                "-g", "none", *args], capture_output=True, text=True)
            lines = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
            parts.append(f"## {title}\n" + "\n".join(lines[:45]))
        shutil.rmtree(self.data.parent, ignore_errors=True)
        text = f"# perf record -a -g during {self.name}\n\n" + "\n\n".join(parts) + "\n"
        (OUT / f"profile-{self.name}.txt").write_text(text)
        return f"profile-{self.name}.txt"


def metric(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def poll(pred, timeout: float, interval: float = 0.05, what: str = "condition"):
    return harness.wait_for(pred, timeout=timeout, interval=interval, what=what)


# --- the servers -----------------------------------------------------------------------------------

class Stack:
    """The servers and services of one scenario, closed together."""

    def __init__(self):
        self.items = []

    def add(self, obj):
        self.items.append(obj)
        obj.start()
        return obj

    def service(self, name: str, env: dict, port_var: str | None = None):
        port = harness.free_port()
        env = {**env, **({port_var: port} if port_var else {})}
        return self.add(harness.Service(name, env))

    def close(self):
        for o in reversed(self.items):
            try:
                o.stop()
            except Exception:  # noqa: BLE001
                o.kill()
            o.close()


def service_default(binary: str, var: str) -> int:
    """A setting's default as the binary's --help prints it ("VAR  text [default]")."""
    out = subprocess.run([str(harness.bin_dir() / binary), "--help"], capture_output=True,
                         text=True, timeout=10).stdout
    m = re.search(rf"^\s*{var}\s.*\[(\d+)\]\s*$", out, re.M)
    if not m:
        raise RuntimeError(f"{binary} --help shows no default for {var}")
    return int(m.group(1))


def new_pg() -> harness.Postgres:
    return harness.Postgres(template=harness.Postgres.template(migrated=True),
                            settings={"max_connections": "200"})


def services_pids(*svcs) -> dict:
    return {s.name: (s.pid, False) for s in svcs}


# --- scenario 1 and 2: the write path --------------------------------------------------------------

def scenario_1_2():
    st = Stack()
    try:
        pg = st.add(new_pg())
        nats = st.add(harness.Nats())
        api = st.service("user-api", {**pg.env, "NATS_URL": nats.url, "LOG_LEVEL": "warn"},
                         "USER_API_PORT")
        pg.sql("INSERT INTO users (name, email) SELECT 'Bench User', 'tmp' || g || '@example.com' "
               "FROM generate_series(1, %s) g ORDER BY g", PUT_USERS)
        pg.sql("UPDATE users SET email = 'u' || id || '@example.com'")
        pg.sql("VACUUM ANALYZE")
        procs = {"user-api": (api.pid, False), "postgres": (pg.pid, True),
                 "nats-server": (nats.pid, False)}
        s1 = {"points": []}
        s2 = {"points": []}
        for c in CONCURRENCY:
            for op, lua, sql in (("POST", "post.lua", "post.sql"), ("PUT", "put.lua", "put.sql")):
                log(f"scenario 1: {op} at {c} clients, user-api")
                m = CpuMeter(procs).start()
                ours = wrk(api.url, lua, c, DURATION,
                           env={"BENCH_RUN": f"{op}{c}", "BENCH_USERS": str(PUT_USERS)})
                ours["cpu"] = m.stop({"wrk": ours["generator_cpu_s"]})
                log(f"  {ours['rate']}/s p50 {ours['p50_ms']} ms p99 {ours['p99_ms']} ms")
                log(f"scenario 1: {op} at {c} clients, pgbench")
                m = CpuMeter(procs).start()
                base = pgbench(pg, sql, c, DURATION, defines={"users": PUT_USERS})
                base["cpu"] = m.stop({"pgbench": base["generator_cpu_s"]})
                log(f"  {base['rate']}/s p50 {base['p50_ms']} ms p99 {base['p99_ms']} ms")
                s1["points"].append({"op": op, "clients": c, "ours": ours, "pgbench": base,
                                     "ratio": round(ours["rate"] / base["rate"], 3)})
                log(f"scenario 2: {op} at {c} clients, pgbench without the outbox row")
                bare = pgbench(pg, sql.replace(".sql", "_no_outbox.sql"), c, DURATION,
                               defines={"users": PUT_USERS})
                s2["points"].append({"op": op, "clients": c, "with_outbox": base["rate"],
                                     "without_outbox": bare["rate"],
                                     "with_outbox_p50_ms": base["p50_ms"],
                                     "without_outbox_p50_ms": bare["p50_ms"],
                                     "ratio": round(base["rate"] / bare["rate"], 3)})
                log(f"  {bare['rate']}/s: with/without = {s2['points'][-1]['ratio']}")
        # An experiment: user-api with as many worker threads (PostgreSQL connections) as
        # clients, next to the default 8, at 64 clients.
        log("scenario 1: experiment, user-api with USER_API_THREADS=64 at 64 clients")
        api64 = st.service("user-api", {**pg.env, "NATS_URL": nats.url, "LOG_LEVEL": "warn",
                                        "USER_API_THREADS": 64}, "USER_API_PORT")
        t64 = wrk(api64.url, "post.lua", 64, DURATION, env={"BENCH_RUN": "t64"})
        before = next(p for p in s1["points"] if p["op"] == "POST" and p["clients"] == 64)
        s1["threads_64_experiment"] = {"clients": 64, "threads_64_rate": t64["rate"],
                                       "threads_64_p50_ms": t64["p50_ms"],
                                       "threads_8_rate": before["ours"]["rate"],
                                       "pgbench_rate": before["pgbench"]["rate"]}
        log(f"  {s1['threads_64_experiment']}")
        api64.stop()
        log("scenario 1: profiled extra run, POST at 16 clients (not in the table)")
        prof = Profile("scenario1-post-16", min(DURATION, 4))
        wrk(api.url, "post.lua", 16, min(DURATION, 4) + 1, env={"BENCH_RUN": "prof"})
        s1["profile"] = prof.finish()
        s1["max_post_rate"] = max(p["ours"]["rate"] for p in s1["points"] if p["op"] == "POST")
        s1["user_api_peak_rss_mb"] = peak_rss_mb(api.pid)
        s1["user_api_threads"] = 8
        results["scenarios"]["1"] = s1
        results["scenarios"]["2"] = s2
    finally:
        st.close()


# --- scenario 3: relay drain -----------------------------------------------------------------------

FILL_SQL = """
INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, headers, payload, created_at)
SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, u, t, v,
       'user.events.' || CASE WHEN v = 1 THEN 'created' ELSE 'updated' END,
       jsonb_build_object('traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'),
       user_event_payload(u, 'Bench User ' || u, 'bench-' || u || '@example.com', v,
                          '2026-11-29T10:00:00.123456Z'::timestamptz, false),
       clock_timestamp()
FROM generate_series(1, %s) g,
     LATERAL (SELECT (g - 1) %% %s + 1 AS u, (g - 1) / %s + 1 AS v) uv,
     LATERAL (SELECT CASE WHEN v = 1 THEN 'user_created' ELSE 'user_updated' END AS t) et
ORDER BY g
"""


def n_events() -> int:
    return max(1000, int(100_000 * SCALE))


def scenario_3_4():
    n = n_events()
    st = Stack()
    try:
        pg = st.add(new_pg())
        nats = st.add(harness.Nats())
        log(f"scenario 3: {n} outbox rows")
        pg.sql(FILL_SQL, n, USERS, USERS)
        pg.sql("VACUUM ANALYZE outbox")
        # Baseline: the claim-and-mark SQL alone (the relay marks rows published, see migrations/0007), on a copy of the backlog in a second database.
        pg.sql("CREATE DATABASE bench_copy TEMPLATE users_db", dbname="postgres")
        batch = service_default("outbox-relay", "RELAY_BATCH_SIZE")
        log(f"scenario 3: claim-and-mark SQL in pgbench (1 client, batches of {batch})")
        m = CpuMeter({"postgres": (pg.pid, True)}).start()
        sqlb = pgbench_db(pg, "bench_copy", "claim_mark.sql", 1, -(-n // batch),
                          # pgbench would read :MI and :SS of the literal as variables
                          {"fmt": 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"', "batch": batch})
        sqlb["cpu"] = m.stop({"pgbench": sqlb["generator_cpu_s"]})
        left = pg.sql("SELECT count(*) FROM outbox_pending", dbname="bench_copy")[0][0]
        sqlb["rows_per_s"] = round((n - left) / sqlb["elapsed_s"], 1)
        log(f"  {sqlb['rows_per_s']} rows/s ({left} left)")

        # Ours: the relay drains the backlog.
        relay_env = {**pg.env, "NATS_URL": nats.url, "LOG_LEVEL": "warn"}
        port = harness.free_port()
        relay = harness.Service("outbox-relay", {**relay_env, "OUTBOX_RELAY_PORT": port})
        st.items.append(relay)
        meter = CpuMeter({"postgres": (pg.pid, True), "nats-server": (nats.pid, False)})
        meter.start()
        prof = Profile("scenario3-relay-drain", 3, hz=99)
        t0 = time.monotonic()
        relay.start(wait=False)
        first = drain_wait(pg, f"http://127.0.0.1:{port}")
        drain = time.monotonic() - t0
        steady = time.monotonic() - first if first else None
        relay_cpu = cpu_s(relay.pid)
        cpu = meter.stop({"outbox-relay": relay_cpu})
        ours = {"rows": n, "seconds": round(drain, 3), "rows_per_s": round(n / drain, 1),
                # From the first PubAck on: without the start (connect, leader lock, stream).
                "seconds_after_first_ack": round(steady, 3) if steady else None,
                "rows_per_s_after_first_ack": round(n / steady, 1) if steady else None,
                "cpu": cpu, "relay_peak_rss_mb": peak_rss_mb(relay.pid),
                "relay_cpu_s_per_10k": round(relay_cpu * 10000 / n, 3)}
        ours["profile"] = prof.finish()
        log(f"  relay: {ours['rows_per_s']} rows/s")
        stream = nats.varz("jsz", streams="true")
        ours["stream_messages"] = stream.get("messages")
        relay.stop()

        # Baseline: the plain async publish loop, same bodies, headers, ids and stream settings,
        # on a second nats-server (the ids would be duplicates on the first). The rows come from
        # a refill of the outbox, read before the clock starts.
        nats2 = st.add(harness.Nats())
        pg.sql("TRUNCATE outbox, outbox_stream")      # the relay keeps the rows it published (RELAY_RETAIN)
        pg.sql(FILL_SQL, n, USERS, USERS)
        log("scenario 3: plain nats.c async publish loop")
        meter = CpuMeter({"nats-server": (nats2.pid, False)}).start()
        c0 = child_cpu()
        out, _, _ = run_child([str(TOOLS / "js_publish"), nats2.url, nats.url,
                               f"host=127.0.0.1 port={pg.port} user={pg.USER} "
                               f"password={pg.PASSWORD} dbname={pg.DB}"], nice=False)
        pub = json.loads(out)
        pub["cpu"] = meter.stop({"js_publish": child_cpu() - c0})
        pub["rows_per_s"] = pub["rate"]
        log(f"  publish loop: {pub['rows_per_s']} msgs/s ({pub['nacks']} nacks)")
        pg.sql("TRUNCATE outbox")
        rtt = json.loads(run_child([str(TOOLS / "js_publish"), "--rtt", nats2.url, "1000"],
                                   nice=False)[0])
        # Experiments, each on a fresh server with a refilled outbox: batches of 2000 rows, and
        # one batch at a time (RELAY_PIPELINE=1, the relay before it pipelined).
        exps = {}
        for key, extra in (("relay_batch_2000_experiment", {"RELAY_BATCH_SIZE": 2000}),
                           ("relay_pipeline_1_experiment", {"RELAY_PIPELINE": 1})):
            exps[key] = {**extra, "rows_per_s": relay_drain_experiment(st, pg, relay_env, n, extra)}
        # The cost of deploy/nats-server.conf's sync_interval: always (every run above has it):
        # the same drain to a server on its defaults (a sync every 2 minutes).
        exps["relay_nats_sync_default_experiment"] = {
            "nats_sync_interval": "120s (default)",
            "rows_per_s": relay_drain_experiment(st, pg, relay_env, n, {}, {"config": None})}
        base = min(pub["rows_per_s"], sqlb["rows_per_s"])
        results["scenarios"]["3"] = {"rows": n, "batch": batch, "ours": ours, "publish_loop": pub,
                                     "claim_mark_sql": sqlb,
                                     **exps,
                                     "ratio": round(ours["rows_per_s"] / base, 3)}
        results["baseline_parts"] = {"jetstream_rtt": rtt}

        if wanted(4):
            scenario_4(st, nats, min(n, APPLY_EVENTS or n), n)
    finally:
        st.close()


def relay_drain_experiment(st: Stack, pg, relay_env: dict, n: int, extra: dict,
                           nats_kw: dict | None = None) -> float:
    """Refills the outbox and times a relay with extra settings draining it to a fresh server
    (started with nats_kw: config=None runs it on nats-server's defaults)."""
    nats = st.add(harness.Nats(**(nats_kw or {})))
    pg.sql("TRUNCATE outbox, outbox_stream")          # the rows of the drain before, kept for RELAY_RETAIN
    pg.sql(FILL_SQL, n, USERS, USERS)
    what = ", ".join([f"{k}={v}" for k, v in extra.items()] +
                     [f"nats {k}={v}" for k, v in (nats_kw or {}).items()])
    log(f"scenario 3: experiment, the relay with {what}")
    relay = harness.Service("outbox-relay", {**relay_env, "NATS_URL": nats.url, **extra,
                                             "OUTBOX_RELAY_PORT": harness.free_port()})
    st.items.append(relay)
    t0 = time.monotonic()
    relay.start(wait=False)
    poll(lambda: pg.sql("SELECT NOT EXISTS (SELECT 1 FROM outbox_pending)")[0][0], timeout=600,
         interval=0.02, what="the relay to drain the outbox")
    rate = round(n / (time.monotonic() - t0), 1)
    log(f"  relay with {what}: {rate} rows/s")
    relay.stop()
    nats.stop()
    return rate


def drain_wait(pg, relay_url: str) -> float | None:
    """Waits until the outbox is empty; returns when the relay's first PubAck was seen."""
    first = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if first is None:
            try:
                if metric(relay_url, "relay_events_published_total") > 0:
                    first = time.monotonic()
            except (requests.RequestException, ValueError):
                pass
        if pg.sql("SELECT NOT EXISTS (SELECT 1 FROM outbox_pending)")[0][0]:
            return first
        time.sleep(0.01)
    raise TimeoutError("the relay did not drain the outbox within 600 s")


def pgbench_db(pg, dbname, script, clients, transactions, defines):
    """pgbench on another database of the same server; adds elapsed_s."""
    saved = pg.DB
    pg.DB = dbname
    try:
        t0 = time.monotonic()
        r = pgbench(pg, script, clients, transactions=transactions, defines=defines)
        r["elapsed_s"] = round(time.monotonic() - t0, 3)
        return r
    finally:
        pg.DB = saved


# --- scenario 4: consumer apply --------------------------------------------------------------------

def scenario_4(st: Stack, nats: harness.Nats, n: int, n_stream: int):
    ferret = st.add(harness.FerretDB())
    log(f"scenario 4: the consumer applies {n} events")
    port = harness.free_port()
    cons = harness.Service("notification-consumer",
                           {"NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "LOG_LEVEL": "warn",
                            "NOTIFICATION_CONSUMER_PORT": port})
    st.items.append(cons)
    meter = CpuMeter({"nats-server": (nats.pid, False), "ferretdb": (ferret.pid, False),
                      "ferretdb-postgres": (ferret.store.pid, True)}).start()
    prof = Profile("scenario4-consumer-apply", 5, hz=99)
    t0 = time.monotonic()
    cons.start(wait=False)
    cons.port = port
    poll(lambda: requests.get(f"{cons.url}/healthz", timeout=1).ok, timeout=30)
    poll(lambda: metric(cons.url, "consumer_events_applied_total") >= n, timeout=3600, interval=0.1,
         what="the consumer to apply every event")
    took = time.monotonic() - t0
    ccpu = cpu_s(cons.pid)
    cpu = meter.stop({"notification-consumer": ccpu})
    ours = {"events": n, "seconds": round(took, 3), "events_per_s": round(n / took, 1), "cpu": cpu,
            "consumer_peak_rss_mb": peak_rss_mb(cons.pid),
            "consumer_cpu_s_per_10k": round(ccpu * 10000 / n, 3)}
    ours["profile"] = prof.finish()
    log(f"  consumer: {ours['events_per_s']} events/s")
    cons.stop()

    log("scenario 4: fetch-and-ack-only loop")
    c0 = child_cpu()
    fa = json.loads(run_child([str(TOOLS / "js_fetch_ack"), nats.url, str(n_stream), "64"], nice=False)[0])
    fa["cpu_s"] = round(child_cpu() - c0, 2)
    log(f"  fetch+ack: {fa['rate']} events/s")

    ferret2 = st.add(harness.FerretDB())
    log("scenario 4: plain mongo-c-driver upsert loop (upsert + history insert)")
    meter = CpuMeter({"ferretdb": (ferret2.pid, False),
                      "ferretdb-postgres": (ferret2.store.pid, True)}).start()
    c0 = child_cpu()
    up = json.loads(run_child([str(TOOLS / "mongo_upsert"), ferret2.uri,
                               str(min(n, UPSERT_EVENTS or n)), "1", str(USERS)],
                              nice=False, timeout=3600)[0])
    up["cpu"] = meter.stop({"mongo_upsert": child_cpu() - c0})
    log(f"  upsert loop: {up['rate']} events/s")
    cost = ferretdb_cost(st)
    results["scenarios"]["4"] = {"events": n, "ours": ours, "fetch_ack_loop": fa,
                                 "users": USERS, "upsert_loop": up, "ferretdb_cost": cost,
                                 "ratio": round(ours["events_per_s"] / up["rate"], 3)}
    results.setdefault("baseline_parts", {})["upsert"] = {"p50_ms": up["p50_ms"],
                                                          "p99_ms": up["p99_ms"]}


def ferretdb_cost(st: Stack) -> list[dict]:
    """What one write costs FerretDB as a collection grows: the median of 100 version-guarded
    updates (the consumer's filter) and of 100 updates by a lone string _id (the only filter
    FerretDB 1.24 hands to its SQLite backend), on collections of BENCH_FERRETDB_SIZES
    documents."""
    ferret = st.add(harness.FerretDB())
    log("scenario 4: FerretDB's cost per update by collection size")
    out = []
    with ferret.client() as c:
        for size in FERRETDB_SIZES:
            guarded, by_str = c.bench_db[f"int_{size}"], c.bench_db[f"str_{size}"]
            guarded.insert_many([{"_id": i, "version": 1} for i in range(size)])
            by_str.insert_many([{"_id": str(i), "version": 1} for i in range(size)])
            row = {"documents": size}
            for key, coll, filt in (
                    ("guarded_update_ms", guarded, lambda i, v: {"_id": i, "version": {"$lt": v}}),
                    ("string_id_update_ms", by_str, lambda i, v: {"_id": str(i)})):
                times = []
                for k in range(100):
                    i = k * size // 100
                    t0 = time.perf_counter()
                    coll.update_one(filt(i, 2), {"$set": {"version": 2}})
                    times.append((time.perf_counter() - t0) * 1000)
                row[key] = round(statistics.median(times), 2)
            log(f"  {row}")
            out.append(row)
    ferret.stop()
    return out


# --- scenario 5 and 6: end to end ------------------------------------------------------------------

def scenario_5_6():
    s1 = results["scenarios"].get("1")
    max_rate = s1["max_post_rate"] if s1 else 1000.0
    st = Stack()
    try:
        pg = st.add(new_pg())
        nats = st.add(harness.Nats())
        ferret = st.add(harness.FerretDB())
        api = st.service("user-api", {**pg.env, "NATS_URL": nats.url, "LOG_LEVEL": "warn"},
                         "USER_API_PORT")
        relay = st.service("outbox-relay", {**pg.env, "NATS_URL": nats.url, "LOG_LEVEL": "warn"},
                           "OUTBOX_RELAY_PORT")
        poll(lambda: requests.get(f"{relay.url}/readyz", timeout=1).ok, timeout=30,
             what="the relay to be ready (stream created)")
        cons = st.service("notification-consumer",
                          {"NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "LOG_LEVEL": "warn"},
                          "NOTIFICATION_CONSUMER_PORT")
        poll(lambda: requests.get(f"{cons.url}/readyz", timeout=1).ok, timeout=30,
             what="the consumer to be ready")
        procs = {"user-api": (api.pid, False), "outbox-relay": (relay.pid, False),
                 "notification-consumer": (cons.pid, False), "postgres": (pg.pid, True),
                 "nats-server": (nats.pid, False), "ferretdb": (ferret.pid, False),
                 "ferretdb-postgres": (ferret.store.pid, True)}
        points = []
        meter_all = CpuMeter(procs).start()
        applied0 = 0.0
        conns = 16
        for frac in (0.1, 0.5, 0.8):
            target = max(1.0, max_rate * frac)
            # wrk keeps every connection busy; the pause per request sets the rate (closed loop).
            log(f"scenario 5: {int(frac * 100)} % of {max_rate}/s = {target:.0f}/s")
            m = CpuMeter(procs).start()
            delay_ms = max(0, int(conns * 1000 / target))
            threads = min(conns, NCPU)
            duration = int(min(DURATION, max(1.0, 2 * E2E_EVENTS / target))) + 1
            w = wrk(api.url, "post.lua", conns, duration,
                    env={"BENCH_RUN": f"e2e{int(frac * 100)}", "BENCH_DELAY_MS": str(delay_ms),
                         "BENCH_MAX_PER_THREAD": str(-(-E2E_EVENTS // threads))})
            sent = w["requests"] - w["non2xx"]
            # Wait for the consumer to catch up before reading the history.
            poll(lambda: metric(cons.url, "consumer_events_applied_total") >= applied0 + sent,
                 timeout=600, interval=0.1, what="the consumer to apply the load point")
            applied0 += sent
            cpu = m.stop({"wrk": w["generator_cpu_s"]})
            with ferret.client() as c:
                docs = list(c["notifications_db"]["user_notification_events"].find(
                    {"email": {"$regex": f"^w-e2e{int(frac * 100)}-"}},
                    {"committed_at": 1, "published_at": 1, "applied_at": 1}))
            lat = {"commit_to_publish": [], "publish_to_apply": [], "commit_to_apply": []}
            commits = sorted(ts(d["committed_at"]) for d in docs)
            achieved = (len(commits) - 1) / (commits[-1] - commits[0]) \
                if len(commits) > 1 and commits[-1] > commits[0] else None
            for d in docs:
                c_, p_, a_ = (ts(d["committed_at"]), ts(d["published_at"]), ts(d["applied_at"]))
                lat["commit_to_publish"].append((p_ - c_) * 1e3)
                lat["publish_to_apply"].append((a_ - p_) * 1e3)
                lat["commit_to_apply"].append((a_ - c_) * 1e3)
            point = {"load": frac, "target_rate": round(target, 1), "achieved_rate": round(achieved, 1) if achieved else None,
                     "events": len(docs), "api_p50_ms": w["p50_ms"], "cpu": cpu}
            for k, xs in lat.items():
                xs.sort()
                point[k] = {"p50_ms": round(pct(xs, 50), 2), "p99_ms": round(pct(xs, 99), 2),
                            "max_ms": round(xs[-1], 2) if xs else None}
            points.append(point)
            log(f"  achieved {point['achieved_rate']}/s, {len(docs)} events, commit-to-visible p50 "
                f"{point['commit_to_apply']['p50_ms']} ms p99 {point['commit_to_apply']['p99_ms']} ms")
        total_cpu = meter_all.stop()
        events = applied0
        s6 = {"events": int(events), "processes": {}}
        for name, svc in (("user-api", api), ("outbox-relay", relay), ("notification-consumer", cons)):
            s6["processes"][name] = {"peak_rss_mb": peak_rss_mb(svc.pid),
                                     "cpu_s": total_cpu[name],
                                     "cpu_s_per_10k_events": round(total_cpu[name] * 1e4 / events, 3)
                                     if events else None}
        for name in ("postgres", "nats-server", "ferretdb", "ferretdb-postgres"):
            s6["processes"][name] = {"cpu_s": total_cpu[name],
                                     "cpu_s_per_10k_events": round(total_cpu[name] * 1e4 / events, 3)
                                     if events else None}
        results["scenarios"]["5"] = {"connections": conns, "max_rate_from_scenario_1": max_rate,
                                     "points": points}
        results["scenarios"]["6"] = s6
    finally:
        st.close()


def ts(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


# --- the report ------------------------------------------------------------------------------------

def machine() -> dict:
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() \
                .splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None
    cpu = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(int(open("/proc/meminfo").readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    t = harness.tools()
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node(), "kernel": platform.release(), "cpu": cpu, "cores": NCPU,
            "memory_gb": mem,
            "commit": first(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
            "postgres": first([os.path.join(t["PG_BIN"], "postgres"), "--version"]),
            "nats_server": first([t["NATS_SERVER"], "--version"]),
            "ferretdb": first([t["FERRETDB"], "--version"]),
            "wrk": first(["wrk", "--version"]) or "wrk",
            "settings": {"BENCH_SCALE": SCALE, "BENCH_EVENT_USERS": USERS,
                         "BENCH_DURATION": DURATION, "BENCH_NICE": NICE,
                         "postgres": "fsync=off, full_page_writes=off, synchronous_commit=on "
                                     "(the test harness's settings)",
                         "ferretdb": "PostgreSQL store set up by deploy/ferretdb-store.sql, "
                                     "fsync=off (the test harness's settings)",
                         "user_api_threads": 8,
                         "relay_batch_size": service_default("outbox-relay", "RELAY_BATCH_SIZE"),
                         "relay_pipeline": service_default("outbox-relay", "RELAY_PIPELINE"),
                         "consumer_batch": 64}}


def main():
    # SIGTERM (a timeout, Ctrl-C through make) unwinds like Ctrl-C, so every Stack closes and the
    # harness's atexit hook kills what was started.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)
    OUT.mkdir(parents=True, exist_ok=True)
    results["machine"] = machine()
    t0 = time.monotonic()
    if wanted(1) or wanted(2) or wanted(5):
        scenario_1_2()
    if wanted(3) or wanted(4):
        scenario_3_4()
    if wanted(5) or wanted(6):
        scenario_5_6()
    results["total_seconds"] = round(time.monotonic() - t0, 1)
    results["out_dir"] = str(OUT)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    import report
    (OUT / "results.md").write_text(report.markdown(results))
    log(f"wrote {OUT / 'results.json'} and {OUT / 'results.md'} in {results['total_seconds']} s")


if __name__ == "__main__":
    main()
