"""The benchmarks (docs/benchmarks.md): every hop measured next to a baseline of the same machine,
in one run.

Starts its own PostgreSQL, nats-server and FerretDB on free ports in temporary folders (the
integration harness, test/integration/harness.py) and the binaries of bin/, runs the scenarios,
and writes bench/results/results.json (raw figures) and bench/results/results.md (the table).
It measures and reports; it asserts no timings. Run it through `make bench` (bench/run.sh).

Knobs (environment; docs/benchmarks.md has the table):
  BENCH_SCALE            1: 100,000 users in scenarios 3 and 4 (100,000 x BENCH_SCALE)
  BENCH_EVENT_USERS      the users of scenarios 3 and 4 (default 100,000 x BENCH_SCALE)
  BENCH_EVENT_VERSIONS   versions per user, default 2: every user's creation (version 1), then
                         its update (version 2), and so on; scenario 3 drains users x versions
                         outbox rows and scenario 4 applies them
  BENCH_APPLY_EVENTS     events scenario 4's consumer and plain loop apply (default all)
  BENCH_CONSUMER_LANES   CONSUMER_LANES of the consumer under test, only when set (otherwise its
                         default); the plain loop of scenario 4 uses as many lanes
  BENCH_UPSERT_BULK      most updates in one bulk of the plain loop (default: the consumer's
                         batch, or less when FerretDB's pool would run out, see scenario_4)
  BENCH_FERRETDB_SIZES   collection sizes of FerretDB's cost table, default 10,1000,10000
  BENCH_DURATION         seconds per load point of scenarios 1 and 2, and of scenario 5's
                         burst and steps, default 5
  BENCH_E2E_SECONDS      seconds per load point of scenario 5, default 10
  BENCH_E2E_PROBE_EVERY  scenario 5 reads back every Nth write, default 10 (1: each; then the
                         extra point that reads back each write is left out)
  BENCH_NICE             niceness of the load generators, default 5
  BENCH_PROFILE          0 skips the perf profiles
  BENCH_ONLY             comma-separated scenario numbers
  BENCH_OUT              the results folder (default bench/results)
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
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "integration"))
import harness  # noqa: E402

import requests  # noqa: E402

BENCH = ROOT / "bench"
TOOLS = BENCH / "bin"
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
# The events of scenarios 3 and 4: version 1 of every user, then version 2 of every user, and so
# on (event g is version (g - 1) / users + 1 of user (g - 1) % users + 1). Issue 11 asks for the
# consumer's apply with 100,000 users in the copy; on FerretDB's PostgreSQL store
# (deploy/ferretdb-store.sql) the cost of an event no longer grows with them.
USERS = int(os.environ.get("BENCH_EVENT_USERS", "0")) or max(100, int(100_000 * SCALE))
VERSIONS = int(os.environ.get("BENCH_EVENT_VERSIONS", "2"))
# Scenario 4's consumer and its plain loop apply this many of those events (0: all of them).
APPLY_EVENTS = int(os.environ.get("BENCH_APPLY_EVENTS", "0"))
# The consumer's CONSUMER_LANES, passed only when set: a consumer without the setting ignores it.
CONSUMER_LANES = int(os.environ.get("BENCH_CONSUMER_LANES", "0"))
UPSERT_BULK = int(os.environ.get("BENCH_UPSERT_BULK", "0"))
# Collection sizes of FerretDB's cost-per-update table (scenario 4).
FERRETDB_SIZES = [int(x) for x in os.environ.get("BENCH_FERRETDB_SIZES", "10,1000,10000").split(",")
                  if x.strip()]
# Scenario 5: seconds per load point, and which writes are read back (every Nth). A waiting read
# costs FerretDB two or three reads of the copy, more than the write it waits for costs in a
# bulk: reading back each write at half the rate sustained without reads loads the pipeline past
# what it sustains (with BENCH_SCALE=0.05: p50 318 ms instead of 23 ms). So the load points
# read back a systematic sample, every tenth write, and one more point at half the rate reads
# back each write, to show what the reads cost.
E2E_SECONDS = float(os.environ.get("BENCH_E2E_SECONDS", "10"))
E2E_PROBE_EVERY = int(os.environ.get("BENCH_E2E_PROBE_EVERY", "10"))
E2E_POINTS = [(0.1, E2E_PROBE_EVERY), (0.5, E2E_PROBE_EVERY), (0.8, E2E_PROBE_EVERY)] + \
    ([(0.5, 1)] if E2E_PROBE_EVERY != 1 else [])
E2E_BURST = max(500, int(20_000 * SCALE))
# e2e_probe's threads: enough for the writes waiting to be visible at once, fewer than the
# connections from one address the services take here (Stack.service).
E2E_THREADS = 200
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

class Cpu(NamedTuple):
    """CPU seconds spent on a process's behalf in user mode and in the kernel (system)."""
    user: float = 0.0
    system: float = 0.0

    @property
    def total(self) -> float:
        return self.user + self.system

    def minus(self, before: Cpu) -> Cpu:
        return Cpu(self.user - before.user, self.system - before.system)


def _stat(path: str) -> list[str]:
    """The fields of a /proc stat file after the command name: [0] is field 3 (state) of
    proc(5), so field k (1-based) is [k - 3]."""
    with open(path) as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_times(pid: int) -> Cpu:
    """CPU time of a process, all its threads (utime and stime, fields 14 and 15)."""
    try:
        st = _stat(f"/proc/{pid}/stat")
    except OSError:
        return Cpu()
    return Cpu(int(st[11]) / CLK, int(st[12]) / CLK)


def cpu_tree_times(pid: int) -> Cpu:
    """CPU time of a process, its reaped children (cutime, cstime: fields 16 and 17) and its live
    children (PostgreSQL's backends)."""
    try:
        st = _stat(f"/proc/{pid}/stat")
    except OSError:
        return Cpu()
    user, system = int(st[11]) + int(st[13]), int(st[12]) + int(st[14])
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                s = _stat(f"/proc/{d}/stat")
                if int(s[1]) == pid:
                    user, system = user + int(s[11]), system + int(s[12])
            except (OSError, IndexError, ValueError):
                pass
    return Cpu(user / CLK, system / CLK)


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
    """CPU seconds spent by named processes between start() and stop(), user and system, next to
    the machine's."""

    def __init__(self, procs: dict):
        self.procs = procs  # name -> (pid, tree?)

    def _sample(self) -> dict[str, Cpu]:
        return {n: (cpu_tree_times(p) if tree else cpu_times(p))
                for n, (p, tree) in self.procs.items()}

    def start(self):
        self.t0, self.c0, self.busy0 = time.monotonic(), self._sample(), machine_busy_s()
        return self

    def stop(self, extra: dict[str, Cpu] | None = None) -> dict:
        """{name: CPU seconds (user + system)} of every process, with extra's (measured by the
        caller, e.g. a load generator's rusage), the machine's figures, and `user_system_s`:
        {name: {"user": s, "system": s}}."""
        # A backend whose client just left may not be reaped yet: its time would be missed.
        time.sleep(0.2)
        wall = time.monotonic() - self.t0
        c1 = self._sample()
        used = {n: c1[n].minus(self.c0[n]) for n in c1}
        used.update(extra or {})
        busy = machine_busy_s() - self.busy0
        out: dict = {n: round(c.total, 2) for n, c in used.items()}
        out["wall_s"] = round(wall, 2)
        out["machine_capacity_s"] = round(wall * NCPU, 2)
        out["machine_busy_s"] = round(busy, 2)
        # Whatever else ran on the machine meanwhile (other users' processes).
        out["other_processes_s"] = round(max(0.0, busy - sum(c.total for c in used.values())), 2)
        out["loadavg_1m_after"] = float(open("/proc/loadavg").read().split()[0])
        out["user_system_s"] = {n: {"user": round(c.user, 2), "system": round(c.system, 2)}
                                for n, c in used.items()}
        return out


def per_item_us(cpu: dict, n: float, names=None) -> dict:
    """CPU microseconds per item (request, transaction, row, event) of each process of a
    CpuMeter's figures (names: all when None): {name: {"user", "system", "total"}}."""
    split = cpu.get("user_system_s", {})
    if not n:
        return {}
    out = {}
    for k in (names if names is not None else split):
        if k in split:
            u, s = split[k]["user"] * 1e6 / n, split[k]["system"] * 1e6 / n
            out[k] = {"user": round(u, 1), "system": round(s, 1), "total": round(u + s, 1)}
    return out


def thread_sample(pid: int) -> dict[int, tuple]:
    """Each thread of a process: tid -> (name, Cpu, voluntary and nonvoluntary context switches
    since it started)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
            name = text[text.index("(") + 1:text.rindex(")")]
            st = text.rsplit(")", 1)[1].split()
            vol = nonvol = 0
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        nonvol = int(line.split()[1])
            out[int(tid)] = (name, Cpu(int(st[11]) / CLK, int(st[12]) / CLK), vol, nonvol)
        except (OSError, ValueError, IndexError):
            pass   # the thread ended while it was read
    return out


class ThreadMeter:
    """The CPU time and context switches of each thread of one process between start() and
    stop(), summed by thread name (the comm a thread gave itself, such as MHD-worker)."""

    def __init__(self, pid: int):
        self.pid = pid

    def start(self):
        self.t0 = thread_sample(self.pid)
        return self

    def stop(self, n: int) -> dict:
        """Per item (n of them: a run's requests): {"per_item": {name: {"threads", "user_us",
        "system_us", "voluntary_switches", "nonvoluntary_switches"}}, "items": n,
        "threads_ended": threads of start() gone by now, whose time in between is missing}."""
        t1 = thread_sample(self.pid)
        sums: dict[str, list] = {}
        for tid, (name, cpu, vol, nonvol) in t1.items():
            # A thread started meanwhile counts from zero.
            _, cpu0, vol0, nonvol0 = self.t0.get(tid, (name, Cpu(), 0, 0))
            d = cpu.minus(cpu0)
            s = sums.setdefault(name, [0, 0.0, 0.0, 0, 0])
            s[0] += 1
            s[1] += d.user
            s[2] += d.system
            s[3] += vol - vol0
            s[4] += nonvol - nonvol0
        per = {}
        busiest_first = sorted(sums.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))
        for name, (k, u, s, vol, nonvol) in busiest_first:
            per[name] = {"threads": k,
                         "user_us": round(u * 1e6 / n, 1) if n else None,
                         "system_us": round(s * 1e6 / n, 1) if n else None,
                         "voluntary_switches": round(vol / n, 3) if n else None,
                         "nonvoluntary_switches": round(nonvol / n, 3) if n else None}
        return {"per_item": per, "items": n,
                "threads_ended": len(set(self.t0) - set(t1))}


def machine_busy_s() -> float:
    """CPU seconds all cores spent on anything but idle and iowait since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK


def run_child(argv: list[str], env: dict | None = None, nice: bool = True,
              timeout: float = 600) -> tuple[str, str, Cpu]:
    """Runs a load generator (niced); returns stdout, stderr and its CPU time (rusage)."""
    if nice:
        argv = ["nice", "-n", str(NICE), *argv]
    c0 = child_cpu()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})})
    out, err = p.communicate(timeout=timeout)
    # communicate() reaped it: the children's rusage of this process grew by its CPU time (and
    # by that of any other child reaped meanwhile; bench.py runs one load generator at a time).
    cpu = child_cpu().minus(c0)
    if p.returncode != 0:
        # The harness's URLs carry passwords (nats://admin:<password>@...): not in the output.
        shown = re.sub(r"//([^:/@\s]+):[^@\s]+@", r"//\1:***@", " ".join(argv))
        shown = re.sub(r"password=\S+", "password=***", shown)
        raise RuntimeError(f"{shown} exited {p.returncode}:\n{out}\n{err}")
    return out, err, cpu


def child_cpu() -> Cpu:
    """The CPU time of this process's reaped children."""
    r = os.times()
    return Cpu(r.children_user, r.children_system)


def generator_fields(cpu: Cpu) -> dict:
    """A load generator's CPU time as a result records it."""
    return {"generator_cpu_s": round(cpu.total, 2), "generator_user_s": round(cpu.user, 2),
            "generator_system_s": round(cpu.system, 2)}


def generator_cpu(r: dict) -> Cpu:
    """The load generator's CPU time of a result of wrk(), pgbench() or e2e_probe()."""
    return Cpu(r.get("generator_user_s", 0.0), r.get("generator_system_s", 0.0))


# --- load generators -------------------------------------------------------------------------------

def wrk(url: str, script: str, conns: int, duration: int, env: dict | None = None) -> dict:
    threads = min(conns, NCPU)
    out, err, cpu = run_child(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s",
                               "--latency", "-s", str(BENCH / "lua" / script), url], env=env)
    m = re.search(r"^BENCH (\{.*\})$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no figures:\n{out}\n{err}")
    r = json.loads(m.group(1))
    ok = r["requests"] - r["non2xx"]
    r["rate"] = round(ok / r["seconds"], 1) if r["seconds"] else 0
    r.update(generator_fields(cpu))
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
    out, err, cpu = run_child(argv, env={"PGPASSWORD": pg.PASSWORD})
    lat = []
    for f in logdir.iterdir():
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]) / 1000.0)
    shutil.rmtree(logdir, ignore_errors=True)
    m = re.search(r"tps = ([\d.]+) \(without initial", out)
    if not m:
        raise RuntimeError(f"pgbench printed no rate:\n{out}\n{err}")
    tps = float(m.group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out)
    lat.sort()
    return {"rate": round(tps, 1), "transactions": len(lat),
            "failed": int(failed.group(1)) if failed else 0,
            "p50_ms": round(pct(lat, 50), 4), "p99_ms": round(pct(lat, 99), 4),
            "max_ms": round(lat[-1], 4) if lat else None, **generator_fields(cpu)}


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def profiling() -> bool:
    """Whether the perf profiles run: perf is installed and BENCH_PROFILE is not 0."""
    return os.environ.get("BENCH_PROFILE", "1") != "0" and shutil.which("perf") is not None


class Profile:
    """A machine-wide `perf record -a -g` while a scenario runs, for at most `seconds`; the summary
    (CPU per process and the top symbols) goes to <OUT>/profile-<name>.txt. Skipped when perf is
    missing or BENCH_PROFILE=0."""

    # Each section of the summary: its title, the arguments of `perf report`, the lines kept.
    SECTIONS = (
        ("CPU samples per process",
         ["--no-children", "--sort", "comm", "--percent-limit", "1"], 45),
        ("CPU samples per process and binary (the kernel's share is [kernel.kallsyms])",
         ["--no-children", "--sort", "comm,dso", "--percent-limit", "0.5"], 45),
        ("Top symbols (self time, by process)",
         ["--no-children", "--sort", "comm,dso,sym", "--percent-limit", "0.7"], 45))

    def __init__(self, name: str, seconds: float, hz: int = 199):
        self.name, self.proc = name, None
        if not profiling():
            return
        self.data = Path(tempfile.mkdtemp(prefix="bench-perf-")) / "perf.data"
        argv = ["perf", "record", *self.target(), "-g", "-F", str(hz)]
        self.title = f"{' '.join(argv)} during {name}"
        self.proc = subprocess.Popen([*argv, "-o", str(self.data), "--", "sleep", str(seconds)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def target(self) -> list[str]:
        return ["-a"]

    def finish(self) -> str | None:
        """Ends the recording (early, when the scenario ended first) and writes the summary."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)   # perf stops its workload and writes its data
        self.proc.wait()
        parts = []
        for title, args, keep in self.SECTIONS:
            r = subprocess.run(["perf", "report", "-i", str(self.data), "--stdio", "-g", "none",
                                *args], capture_output=True, text=True)
            lines = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
            parts.append(f"## {title}\n" + "\n".join(lines[:keep]))
        shutil.rmtree(self.data.parent, ignore_errors=True)
        text = f"# {self.title}\n\n" + "\n\n".join(parts) + "\n"
        (OUT / f"profile-{self.name}.txt").write_text(text)
        return f"profile-{self.name}.txt"


class ProcessProfile(Profile):
    """`perf record -g -p <pid>`: the samples of one process alone, at a higher frequency, by
    thread name, by binary, by symbol, and by caller (which system or library call the time is
    under). Skipped like Profile."""

    SECTIONS = (
        ("CPU samples by thread name", ["--no-children", "--sort", "comm"], 30),
        ("CPU samples by binary (the kernel's share is [kernel.kallsyms])",
         ["--no-children", "--sort", "dso", "--percent-limit", "0.1"], 30),
        ("Top symbols (self time)", ["--no-children", "--sort", "dso,sym"], 40),
        # Frame-pointer call chains: complete in the kernel, cut short in user space where a
        # library was built without frame pointers.
        ("Callers (children time: the samples in a function and in all it called)",
         ["--children", "--sort", "sym"], 40))

    def __init__(self, name: str, seconds: float, pid: int, hz: int = 1999):
        self.pid = pid
        super().__init__(name, seconds, hz)

    def target(self) -> list[str]:
        return ["-p", str(self.pid)]


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
        # wrk (up to 64 connections) and e2e_probe (E2E_THREADS) come from one address, more
        # connections than the services allow one address by default (64).
        env = {"USER_API_MAX_CONNECTIONS_PER_IP": "1024",
               "NOTIFICATION_CONSUMER_MAX_CONNECTIONS_PER_IP": "1024",
               **env, **({port_var: port} if port_var else {})}
        return self.add(harness.Service(name, env))

    def close(self):
        for o in reversed(self.items):
            try:
                o.stop()
            except Exception:  # noqa: BLE001
                o.kill()
            o.close()


def service_default(binary: str, var: str, required: bool = True) -> int | None:
    """A setting's default as the binary's --help prints it ("VAR  text [default]"); None for a
    setting the binary does not have, unless required."""
    out = subprocess.run([str(harness.bin_dir() / binary), "--help"], capture_output=True,
                         text=True, timeout=10).stdout
    m = re.search(rf"^\s*{var}\s.*\[(\d+)\]\s*$", out, re.M)
    if not m:
        if not required:
            return None
        raise RuntimeError(f"{binary} --help shows no default for {var}")
    return int(m.group(1))


def consumer_env() -> dict:
    """The consumer's settings besides its defaults: CONSUMER_LANES when BENCH_CONSUMER_LANES is
    set."""
    return {"CONSUMER_LANES": CONSUMER_LANES} if CONSUMER_LANES else {}


def consumer_lanes() -> int:
    """The lanes of the consumer under test: BENCH_CONSUMER_LANES, else its default, else 1 (a
    consumer without lanes)."""
    return CONSUMER_LANES or service_default("notification-consumer", "CONSUMER_LANES",
                                             required=False) or 1


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
                threads = ThreadMeter(api.pid).start()
                ours = wrk(api.url, lua, c, DURATION,
                           env={"BENCH_RUN": f"{op}{c}", "BENCH_USERS": str(PUT_USERS)})
                ours["threads"] = threads.stop(ours["requests"])
                ours["cpu"] = m.stop({"wrk": generator_cpu(ours)})
                ours["cpu_us_per_item"] = per_item_us(
                    ours["cpu"], ours["requests"], ("user-api", "postgres", "nats-server", "wrk"))
                log(f"  {ours['rate']}/s p50 {ours['p50_ms']} ms p99 {ours['p99_ms']} ms, user-api "
                    f"{ours['cpu_us_per_item'].get('user-api', {}).get('total')} µs of CPU per "
                    "request")
                log(f"scenario 1: {op} at {c} clients, pgbench")
                m = CpuMeter(procs).start()
                base = pgbench(pg, sql, c, DURATION, defines={"users": PUT_USERS})
                base["cpu"] = m.stop({"pgbench": generator_cpu(base)})
                base["cpu_us_per_item"] = per_item_us(base["cpu"], base["transactions"],
                                                      ("postgres", "pgbench"))
                log(f"  {base['rate']}/s p50 {base['p50_ms']} ms p99 {base['p99_ms']} ms")
                s1["points"].append({"op": op, "clients": c, "ours": ours, "pgbench": base,
                                     "ratio": round(ours["rate"] / base["rate"], 3),
                                     "projection": projection(ours, base)})
                log(f"scenario 2: {op} at {c} clients, pgbench without the outbox row")
                bare = pgbench(pg, sql.replace(".sql", "_no_outbox.sql"), c, DURATION,
                               defines={"users": PUT_USERS})
                s2["points"].append({"op": op, "clients": c, "with_outbox": base["rate"],
                                     "without_outbox": bare["rate"],
                                     "with_outbox_p50_ms": base["p50_ms"],
                                     "without_outbox_p50_ms": bare["p50_ms"],
                                     "ratio": round(base["rate"] / bare["rate"], 3)})
                log(f"  {bare['rate']}/s: with/without = {s2['points'][-1]['ratio']}")
        s1["pg_connections_experiment"] = pg_connections_experiment(st, pg, nats, s1["points"])
        log("scenario 1: profiled extra run, POST at 16 clients (not in the table)")
        seconds = min(DURATION, 4)
        prof = Profile("scenario1-post-16", seconds)
        prof_api = ProcessProfile("user-api-post-16", seconds, api.pid)
        wrk(api.url, "post.lua", 16, seconds + 1, env={"BENCH_RUN": "prof"})
        s1["profile"] = prof.finish()
        s1["user_api_profile"] = prof_api.finish()
        s1["max_post_rate"] = max(p["ours"]["rate"] for p in s1["points"] if p["op"] == "POST")
        s1["user_api_peak_rss_mb"] = peak_rss_mb(api.pid)
        s1["user_api_threads"] = service_default("user-api", "USER_API_THREADS", required=False)
        s1["user_api_pg_connections"] = service_default("user-api", "USER_API_PG_CONNECTIONS",
                                                        required=False)
        results["scenarios"]["1"] = s1
        results["scenarios"]["2"] = s2
    finally:
        st.close()


def projection(ours: dict, base: dict) -> dict:
    """The rates of a scenario-1 point projected to a machine where the load generator does not
    share the cores: each rate times machine_busy_s / (machine_busy_s - the generator's CPU
    seconds), as if the CPU wrk or pgbench took had gone to the rest at the same cost per
    request. A projection from the CPU figures, not a measurement: it holds only while the run
    is CPU-bound (the machine busy all the time)."""
    def scaled(r: dict, generator: str) -> float | None:
        busy, gen = r["cpu"]["machine_busy_s"], r["cpu"].get(generator, 0.0)
        return round(r["rate"] * busy / (busy - gen), 1) if busy > gen else None

    def busy_share(r: dict) -> float | None:
        cap = r["cpu"]["machine_capacity_s"]
        return round(r["cpu"]["machine_busy_s"] / cap, 3) if cap else None
    a, b = scaled(ours, "wrk"), scaled(base, "pgbench")
    return {"user_api_rate": a, "pgbench_rate": b,
            "ratio": round(a / b, 3) if a and b else None,
            "user_api_busy_share": busy_share(ours), "pgbench_busy_share": busy_share(base)}


def pg_connections_experiment(st: Stack, pg, nats, points: list) -> dict:
    """user-api with four times its default PostgreSQL connections (USER_API_PG_CONNECTIONS),
    POST at 64 clients, next to the table's point with the default; skipped for a user-api
    without the setting."""
    default = service_default("user-api", "USER_API_PG_CONNECTIONS", required=False)
    if default is None:
        log("scenario 1: experiment skipped: bin/user-api --help shows no USER_API_PG_CONNECTIONS")
        return {"skipped": "bin/user-api has no USER_API_PG_CONNECTIONS setting"}
    conns = 4 * default
    log(f"scenario 1: experiment, user-api with USER_API_PG_CONNECTIONS={conns} (4 x its "
        f"default) at 64 clients")
    api = st.service("user-api", {**pg.env, "NATS_URL": nats.url, "LOG_LEVEL": "warn",
                                  "USER_API_PG_CONNECTIONS": conns}, "USER_API_PORT")
    m = CpuMeter({"user-api": (api.pid, False), "postgres": (pg.pid, True)}).start()
    r = wrk(api.url, "post.lua", 64, DURATION, env={"BENCH_RUN": "pgconns"})
    cpu = m.stop({"wrk": generator_cpu(r)})
    api.stop()
    before = next(p for p in points if p["op"] == "POST" and p["clients"] == 64)
    out = {"clients": 64, "pg_connections": conns, "pg_connections_default": default,
           "rate": r["rate"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "cpu": cpu,
           "cpu_us_per_item": per_item_us(cpu, r["requests"], ("user-api", "postgres", "wrk")),
           "default_rate": before["ours"]["rate"], "pgbench_rate": before["pgbench"]["rate"]}
    log(f"  {r['rate']}/s with {conns} connections, {before['ours']['rate']}/s with {default}")
    return out


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
    """The outbox rows of scenario 3, the events of scenario 4: every version of every user."""
    return USERS * VERSIONS


def scenario_3_4():
    n = n_events()
    st = Stack()
    try:
        pg = st.add(new_pg())
        nats = st.add(harness.Nats())
        log(f"scenario 3: {n} outbox rows ({USERS} users x {VERSIONS} versions)")
        pg.sql(FILL_SQL, n, USERS, USERS)
        pg.sql("VACUUM ANALYZE outbox")
        # Scenario 4 alone needs the stream the relay's drain fills, not scenario 3's baselines
        # and experiments.
        if wanted(3):
            # Baseline: the claim-and-mark SQL alone (the relay marks rows published, see
            # migrations/0007), on a copy of the backlog in a second database.
            pg.sql("CREATE DATABASE bench_copy TEMPLATE users_db", dbname="postgres")
            batch = service_default("outbox-relay", "RELAY_BATCH_SIZE")
            log(f"scenario 3: claim-and-mark SQL in pgbench (1 client, batches of {batch})")
            m = CpuMeter({"postgres": (pg.pid, True)}).start()
            sqlb = pgbench_db(pg, "bench_copy", "claim_mark.sql", 1, -(-n // batch),
                              # pgbench would read :MI and :SS of the literal as variables
                              {"fmt": 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"', "batch": batch})
            sqlb["cpu"] = m.stop({"pgbench": generator_cpu(sqlb)})
            left = pg.sql("SELECT count(*) FROM outbox_pending", dbname="bench_copy")[0][0]
            sqlb["rows_per_s"] = round((n - left) / sqlb["elapsed_s"], 1)
            sqlb["cpu_us_per_item"] = per_item_us(sqlb["cpu"], n - left, ("postgres", "pgbench"))
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
        # The relay's own time from its start, as the meter's from before it.
        relay_cpu = cpu_times(relay.pid)
        cpu = meter.stop({"outbox-relay": relay_cpu})
        ours = {"rows": n, "seconds": round(drain, 3), "rows_per_s": round(n / drain, 1),
                # From the first PubAck on: without the start (connect, leader lock, stream).
                "seconds_after_first_ack": round(steady, 3) if steady else None,
                "rows_per_s_after_first_ack": round(n / steady, 1) if steady else None,
                "cpu": cpu, "relay_peak_rss_mb": peak_rss_mb(relay.pid),
                "relay_cpu_s_per_10k": round(relay_cpu.total * 10000 / n, 3),
                "cpu_us_per_item": per_item_us(cpu, n, ("outbox-relay", "nats-server", "postgres"))}
        ours["profile"] = prof.finish()
        log(f"  relay: {ours['rows_per_s']} rows/s")
        stream = nats.varz("jsz", streams="true")
        ours["stream_messages"] = stream.get("messages")
        relay.stop()

        if wanted(3):
            # Baseline: the plain async publish loop, same bodies, headers, ids and stream
            # settings, on a second nats-server (the ids would be duplicates on the first). The
            # rows come from a refill of the outbox, read before the clock starts.
            nats2 = st.add(harness.Nats())
            # The relay keeps the rows it published (RELAY_RETAIN).
            pg.sql("TRUNCATE outbox, outbox_stream")
            pg.sql(FILL_SQL, n, USERS, USERS)
            log("scenario 3: plain nats.c async publish loop")
            meter = CpuMeter({"nats-server": (nats2.pid, False)}).start()
            # At most as many messages in flight as the relay has (a batch a slot of its
            # pipeline): nats-server 2.15 refuses publishes beyond its stream's ingest queue
            # ("too many requests", JetStream error 10167), and without a window the loop had
            # half of its messages refused and counted a rate it never stored.
            window = service_default("outbox-relay", "RELAY_BATCH_SIZE") * \
                service_default("outbox-relay", "RELAY_PIPELINE")
            out, _, gen = run_child([str(TOOLS / "js_publish"), nats2.admin_url, nats.admin_url,
                                     f"host=127.0.0.1 port={pg.port} user={pg.USER} "
                                     f"password={pg.PASSWORD} dbname={pg.DB}", str(window)],
                                    nice=False)
            pub = json.loads(out)
            pub["window"] = window
            # js_publish's time includes reading the rows before its clock starts.
            pub["cpu"] = meter.stop({"js_publish": gen})
            pub["rows_per_s"] = pub["rate"]
            pub["cpu_us_per_item"] = per_item_us(pub["cpu"], pub["rows"],
                                                 ("js_publish", "nats-server"))
            log(f"  publish loop: {pub['rows_per_s']} msgs/s ({pub['nacks']} nacks{', the first: ' + pub['first_nack'] if pub.get('first_nack') else ''})")
            pg.sql("TRUNCATE outbox")
            rtt = json.loads(run_child([str(TOOLS / "js_publish"), "--rtt", nats2.admin_url, "1000"],
                                       nice=False)[0])
            # Experiments, each on a fresh server with a refilled outbox: batches of 2000 rows,
            # and one batch at a time (RELAY_PIPELINE=1, the relay before it pipelined).
            exps = {}
            for key, extra in (("relay_batch_2000_experiment", {"RELAY_BATCH_SIZE": 2000}),
                               ("relay_pipeline_1_experiment", {"RELAY_PIPELINE": 1})):
                exps[key] = {**extra,
                             "rows_per_s": relay_drain_experiment(st, pg, relay_env, n, extra)}
            # The cost of deploy/nats-server.conf's sync_interval: always (every run above has
            # it): the same drain to a server on its defaults (a sync every 2 minutes).
            exps["relay_nats_sync_default_experiment"] = {
                "nats_sync_interval": "120s (default)",
                "rows_per_s": relay_drain_experiment(st, pg, relay_env, n, {}, {"config": None})}
            base = min(pub["rows_per_s"], sqlb["rows_per_s"])
            results["scenarios"]["3"] = {"rows": n, "batch": batch, "ours": ours,
                                         "publish_loop": pub, "claim_mark_sql": sqlb, **exps,
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

class Progress:
    """A counter of a service's /metrics read every `interval` seconds until it reaches `target`,
    as (monotonic time, value) samples; when it stands still for `stall` seconds it is taken to
    be stuck (the consumer retrying a write that cannot succeed, say) and the run fails."""

    def __init__(self, url: str, name: str, interval: float = 0.05, stall: float = 120):
        self.url, self.name, self.interval, self.stall = url, name, interval, stall
        self.samples: list[tuple[float, float]] = []

    def read(self) -> float | None:
        try:
            v = metric(self.url, self.name)
        except (requests.RequestException, ValueError):
            return None
        self.samples.append((time.monotonic(), v))
        return v

    def until(self, target: float, what: str, *svcs):
        moved = time.monotonic()
        last = None
        while True:
            v = self.read()
            if v is not None and v >= target:
                return
            if v is not None and v != last:
                last, moved = v, time.monotonic()
            if time.monotonic() - moved > self.stall:
                tails = "".join(f"\n--- {p.name}: {p.log_path}\n{p.log_tail(20)}" for p in svcs)
                raise TimeoutError(f"{what}: {self.name} stood at {last} of {target} for "
                                   f"{self.stall:.0f} s{tails}")
            time.sleep(self.interval)

    def when(self, value: float) -> float | None:
        """The time the counter reached value, interpolated between the samples around it."""
        prev = None
        for t, v in self.samples:
            if v >= value:
                if prev is None or v == prev[1]:
                    return t
                return prev[0] + (t - prev[0]) * (value - prev[1]) / (v - prev[1])
            prev = (t, v)
        return None

    def value_at(self, t: float) -> float:
        """The counter at time t, interpolated between the samples around it."""
        prev = None
        for ts_, v in self.samples:
            if ts_ >= t:
                if prev is None or ts_ == prev[0]:
                    return v
                return prev[1] + (v - prev[1]) * (t - prev[0]) / (ts_ - prev[0])
            prev = (ts_, v)
        return prev[1] if prev else 0.0

    def tenths(self, base: float, n: int) -> dict:
        """Milliseconds per event in the first and the last tenth of n events counted from base:
        from the first event (not the process's start) to the tenth's last, and from the end of
        nine tenths to the last event."""
        tenth = max(1, n // 10)
        t_first = self.when(base + 0.5)   # the counter leaving base
        t1, t9, t10 = self.when(base + tenth), self.when(base + n - tenth), self.when(base + n)
        if None in (t_first, t1, t9, t10):
            return {}
        return {"first_tenth_mean_ms": round((t1 - t_first) * 1e3 / tenth, 4),
                "last_tenth_mean_ms": round((t10 - t9) * 1e3 / tenth, 4),
                "seconds_from_first_event": round(t10 - t_first, 3)}

    def later_tenths(self, after: int, n: int) -> dict:
        """The same for the events counted after the first `after` of n (scenario 4's updates,
        after the users' creations): from when `after` were applied to the end of the first
        tenth of the rest, and the last tenth."""
        tenth = (n - after) // 10
        if tenth < 1:
            return {}
        t0, t1 = self.when(after), self.when(after + tenth)
        t9, t10 = self.when(n - tenth), self.when(n)
        if None in (t0, t1, t9, t10):
            return {}
        return {"updates_first_tenth_mean_ms": round((t1 - t0) * 1e3 / tenth, 4),
                "updates_last_tenth_mean_ms": round((t10 - t9) * 1e3 / tenth, 4)}


def totals(per_item: dict) -> dict:
    """{name: total} of per_item_us()'s figures (results.json's cpu_us_per_event)."""
    return {k: v["total"] for k, v in per_item.items()}


def scenario_4(st: Stack, nats: harness.Nats, n: int, n_stream: int):
    batch = service_default("notification-consumer", "CONSUMER_BATCH")
    lanes = consumer_lanes()
    # FerretDB 1.24 holds a PostgreSQL connection for every update of one update command that
    # matched a document until the whole command ends (internal/handler/msg_update.go: a deferred
    # Close inside the loop over the updates), and waits for one forever when its pool
    # (pool_max_conns, which the harness sets) runs out. The loop's bulks, all lanes together,
    # leave ten of the pool free; with the harness's pool that is the consumer's batch, unsplit.
    # The cost per event hardly depends on the size of a bulk (16 to 64 updates per bulk within a
    # few per cent).
    pool = getattr(harness, "FERRET_POOL_MAX_CONNS", 50)
    bulk = UPSERT_BULK or max(1, min(batch, (pool - 10) // lanes))
    ferret = st.add(harness.FerretDB())
    log(f"scenario 4: the consumer applies {n} events ({USERS} users, {VERSIONS} versions each; "
        f"{'CONSUMER_LANES=%d' % CONSUMER_LANES if CONSUMER_LANES else 'default lanes'})")
    port = harness.free_port()
    cons = harness.Service("notification-consumer",
                           {"NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "LOG_LEVEL": "warn",
                            "NOTIFICATION_CONSUMER_PORT": port, **consumer_env()})
    st.items.append(cons)
    meter = CpuMeter({"nats-server": (nats.pid, False), "ferretdb": (ferret.pid, False),
                      "ferretdb-postgres": (ferret.store.pid, True)}).start()
    prof = Profile("scenario4-consumer-apply", 5, hz=99)
    t0 = time.monotonic()
    cons.start(wait=False)
    cons.port = port
    poll(lambda: requests.get(f"{cons.url}/healthz", timeout=1).ok, timeout=30)
    prog = Progress(cons.url, "consumer_events_applied_total")
    prog.until(n, "the consumer applying every event", cons, ferret)
    took = (prog.when(n) or time.monotonic()) - t0
    # The consumer's own time from its start, as the meter's from before it.
    ccpu = cpu_times(cons.pid)
    cpu = meter.stop({"notification-consumer": ccpu})
    per_event = per_item_us(cpu, n, ("notification-consumer", "nats-server", "ferretdb",
                                     "ferretdb-postgres"))
    ours = {"events": n, "seconds": round(took, 3), "events_per_s": round(n / took, 1), "cpu": cpu,
            **prog.tenths(0, n), **prog.later_tenths(USERS, n),
            "apply_errors": metric(cons.url, "consumer_apply_errors_total"),
            "consumer_peak_rss_mb": peak_rss_mb(cons.pid),
            "consumer_cpu_s_per_10k": round(ccpu.total * 10000 / n, 3),
            "cpu_us_per_event": totals(per_event), "cpu_us_per_item": per_event}
    ours["profile"] = prof.finish()
    log(f"  consumer: {ours['events_per_s']} events/s, ms per event first/last tenth "
        f"{ours.get('first_tenth_mean_ms')}/{ours.get('last_tenth_mean_ms')}")
    cons.stop()

    log("scenario 4: fetch-and-ack-only loop")
    meter = CpuMeter({"nats-server": (nats.pid, False)}).start()
    out, _, gen = run_child([str(TOOLS / "js_fetch_ack"), nats.admin_url, str(n_stream), "64"],
                            nice=False)
    fa = json.loads(out)
    fa["cpu_s"] = round(gen.total, 2)
    fa["cpu"] = meter.stop({"js_fetch_ack": gen})
    fa["cpu_us_per_item"] = per_item_us(fa["cpu"], fa["events"], ("js_fetch_ack", "nats-server"))
    log(f"  fetch+ack: {fa['rate']} events/s")

    ferret2 = st.add(harness.FerretDB())
    log(f"scenario 4: plain mongo-c-driver loop, batched as the consumer (batches of {batch}, "
        f"{lanes} lanes, bulks of at most {bulk} updates)")
    meter = CpuMeter({"ferretdb": (ferret2.pid, False),
                      "ferretdb-postgres": (ferret2.store.pid, True)}).start()
    out, _, gen = run_child([str(TOOLS / "mongo_upsert"), ferret2.uri, str(n), "3", str(USERS),
                             str(lanes), str(batch), str(bulk)], nice=False, timeout=3600)
    up = json.loads(out)
    up["cpu"] = meter.stop({"mongo_upsert": gen})
    up["cpu_us_per_item"] = per_item_us(up["cpu"], n, ("mongo_upsert", "ferretdb",
                                                       "ferretdb-postgres"))
    up["cpu_us_per_event"] = totals(up["cpu_us_per_item"])
    up["bulk_max"] = bulk
    log(f"  plain loop: {up['rate']} events/s, ms per event first/last tenth "
        f"{up['first_tenth_mean_ms']}/{up['last_tenth_mean_ms']}")
    ferret2.stop()
    cost = ferretdb_cost(st)
    results["scenarios"]["4"] = {"events": n, "users": USERS, "versions": VERSIONS,
                                 "batch": batch, "lanes": lanes,
                                 "lanes_set": CONSUMER_LANES or None,
                                 "lanes_default": service_default("notification-consumer",
                                                                  "CONSUMER_LANES", required=False),
                                 "ours": ours, "fetch_ack_loop": fa, "upsert_loop": up,
                                 "ferretdb_cost": cost,
                                 "ratio": round(ours["events_per_s"] / up["rate"], 3)}


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

def sampling(applied: Progress, fn, *args, **kw):
    """Runs fn(*args, **kw) in a thread, reading the counter of applied meanwhile (a run of a
    load generator blocks otherwise); returns what fn returned, or raises what it raised."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 (re-raised below, in the caller's thread)
            box["error"] = e
    t = threading.Thread(target=run)
    t.start()
    while t.is_alive():
        applied.read()
        time.sleep(0.05)
    t.join()
    applied.read()
    if "error" in box:
        raise box["error"]
    return box["result"]


def e2e_probe(api, cons, rate: float, seconds: float, tag: str, every: int) -> dict:
    """bench/bin/e2e_probe: POSTs at rate for seconds, every Nth read back (0: none)."""
    out, _, cpu = run_child([str(TOOLS / "e2e_probe"), api.url, cons.url, f"{rate:.1f}",
                             f"{seconds:g}", tag, str(E2E_THREADS), "5s", str(every)],
                            timeout=seconds + 120)
    r = json.loads(out)
    r.update(generator_fields(cpu))
    return r


def sustained_rate(api, cons, applied: Progress, conns: int, svcs: tuple) -> dict:
    """How many writes per second the copy keeps up with, user-api, the relay and the consumer
    running together. A burst first: wrk POSTs with no pause (for BENCH_DURATION seconds, at most
    20,000 x BENCH_SCALE writes), faster than the pipeline carries; the rate at which the copy
    applied them, from the first to the last, is where the search starts. Then steps of 10 %:
    writes paced by e2e_probe (none read back) for BENCH_DURATION seconds; the pipeline keeps up
    when, over the second half of the step, the consumer applied at least 95 % of the rate
    written. Down from the start until a step keeps up, or up while steps keep up; the sustained
    rate is the highest step that kept up."""
    base = applied.read() or 0.0
    # At most E2E_BURST writes: the copy they leave behind stays the same size from run to run,
    # and a slow consumer does not spend minutes catching up.
    w = sampling(applied, wrk, api.url, "post.lua", conns, DURATION,
                 env={"BENCH_RUN": "burst",
                      "BENCH_MAX_PER_THREAD": str(-(-E2E_BURST // min(conns, NCPU)))})
    written = w["requests"] - w["non2xx"]
    applied.until(base + written, "the consumer applying the burst", *svcs)
    t_first, t_done = applied.when(base + 0.5), applied.when(base + written)
    burst_rate = written / (t_done - t_first) if t_first and t_done and t_done > t_first \
        else float(written)
    out = {"connections": conns, "burst_writes": written, "burst_write_rate": w["rate"],
           "burst_applied_rate": round(burst_rate, 1), "step_seconds": DURATION, "steps": []}
    rate, best, direction = burst_rate, None, 0
    for k in range(10):
        base = applied.read() or 0.0
        t1 = time.monotonic()
        r = sampling(applied, e2e_probe, api, cons, rate, DURATION, f"step{k}", 0)
        # The writes were due from about t1 on (the probe starts within a few ms).
        half, end = t1 + DURATION / 2, t1 + DURATION
        kept = (applied.value_at(end) - applied.value_at(half)) / (end - half)
        applied.until(base + r["posted"], "the consumer catching up after a step", *svcs)
        ok = kept >= 0.95 * rate
        out["steps"].append({"rate": round(rate, 1), "achieved_write_rate": r["achieved_rate"],
                             "applied_rate_second_half": round(kept, 1), "kept_up": ok})
        log(f"  step {k}: writes at {rate:.0f}/s, applied {kept:.0f}/s over the second half: "
            f"{'kept up' if ok else 'fell behind'}")
        if ok:
            best = rate
        if direction == 0:
            direction = 1 if ok else -1
        if (direction < 0 and ok) or (direction > 0 and not ok) or k == 9:
            break
        rate *= 1.1 if direction > 0 else 0.9
    out["kept_up"] = best is not None
    # Without a step that kept up, the slowest step tried: the load points are then fractions
    # of a rate the pipeline did not sustain, which the report says.
    out["sustained_rate"] = round(best if best is not None else rate, 1)
    return out


def history_breakdown(ferret, tag: str) -> dict:
    """Commit to published and published to applied of a load point's writes, from the history
    entries' committed_at (the outbox row's created_at, just before the commit), published_at and
    applied_at (the consumer's clock as it writes the batch)."""
    with ferret.client() as c:
        docs = list(c["notifications_db"]["user_notification_events"].find(
            {"email": {"$regex": f"^w-{tag}-"}},
            {"committed_at": 1, "published_at": 1, "applied_at": 1}))
    lat = {"commit_to_publish": [], "publish_to_apply": []}
    for d in docs:
        c_, p_, a_ = (ts(d["committed_at"]), ts(d["published_at"]), ts(d["applied_at"]))
        lat["commit_to_publish"].append((p_ - c_) * 1e3)
        lat["publish_to_apply"].append((a_ - p_) * 1e3)
    out = {"entries": len(docs)}
    for k, xs in lat.items():
        xs.sort()
        out[k] = {"p50_ms": round(pct(xs, 50), 2), "p99_ms": round(pct(xs, 99), 2)}
    return out


def scenario_5_6():
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
                          {"NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "LOG_LEVEL": "warn",
                           **consumer_env()},
                          "NOTIFICATION_CONSUMER_PORT")
        poll(lambda: requests.get(f"{cons.url}/readyz", timeout=1).ok, timeout=30,
             what="the consumer to be ready")
        procs = {"user-api": (api.pid, False), "outbox-relay": (relay.pid, False),
                 "notification-consumer": (cons.pid, False), "postgres": (pg.pid, True),
                 "nats-server": (nats.pid, False), "ferretdb": (ferret.pid, False),
                 "ferretdb-postgres": (ferret.store.pid, True)}
        meter_all = CpuMeter(procs).start()
        # The load generators' time over the whole scenario: the children this process reaps
        # meanwhile are wrk and e2e_probe only (the services are reaped when the stack closes).
        generators0 = child_cpu()
        applied = Progress(cons.url, "consumer_events_applied_total", interval=0.1)
        conns = 16
        log(f"scenario 5: the rate the pipeline sustains (a burst of POSTs, then paced steps of "
            f"{DURATION} s)")
        m = CpuMeter(procs).start()
        sat = sustained_rate(api, cons, applied, conns, (cons, relay, ferret))
        sat["cpu"] = m.stop()
        log(f"  the copy kept up with {sat['sustained_rate']}/s (the burst was applied at "
            f"{sat['burst_applied_rate']}/s)")
        points = []
        for k, (frac, every) in enumerate(E2E_POINTS):
            rate = max(1.0, sat["sustained_rate"] * frac)
            tag = f"e2e{k}"
            log(f"scenario 5: {int(frac * 100)} % of {sat['sustained_rate']}/s = {rate:.0f} "
                f"writes/s for {E2E_SECONDS:g} s, "
                f"{'each' if every == 1 else f'every {every}th'} read back when visible")
            base = applied.read() or 0.0
            m = CpuMeter(procs).start()
            probe = e2e_probe(api, cons, rate, E2E_SECONDS, tag, every)
            applied.until(base + probe["posted"], "the consumer applying the load point", cons,
                          relay, ferret)
            cpu = m.stop({"e2e_probe": generator_cpu(probe)})
            point = {"load": frac, **probe, "cpu": cpu,
                     "cpu_us_per_item": per_item_us(cpu, probe["posted"]),
                     "history": history_breakdown(ferret, tag)}
            points.append(point)
            log(f"  achieved {probe['achieved_rate']}/s, {probe['visible']} of {probe['probed']} "
                f"read back: commit to visible p50 {probe['visible_p50_ms']} ms p99 "
                f"{probe['visible_p99_ms']} ms (writes late > 10 ms: {probe['late_over_10ms']})")
        total_cpu = meter_all.stop({"load generators": child_cpu().minus(generators0)})
        events = applied.samples[-1][1] if applied.samples else 0
        per_event = per_item_us(total_cpu, events)
        s6 = {"events": int(events), "processes": {}, "cpu": total_cpu}
        rss = {"user-api": api, "outbox-relay": relay, "notification-consumer": cons}
        for name in ("user-api", "outbox-relay", "notification-consumer", "postgres",
                     "nats-server", "ferretdb", "ferretdb-postgres", "load generators"):
            s6["processes"][name] = {**({"peak_rss_mb": peak_rss_mb(rss[name].pid)}
                                        if name in rss else {}),
                                     "cpu_s": total_cpu[name],
                                     "cpu_s_per_10k_events": round(total_cpu[name] * 1e4 / events, 3)
                                     if events else None,
                                     "cpu_us_per_event": per_event.get(name)}
        results["scenarios"]["5"] = {"saturation": sat, "seconds_per_point": E2E_SECONDS,
                                     "probe_every": E2E_PROBE_EVERY, "probe_threads": E2E_THREADS,
                                     "lanes_set": CONSUMER_LANES or None, "points": points}
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
                         "BENCH_EVENT_VERSIONS": VERSIONS, "BENCH_DURATION": DURATION,
                         "BENCH_E2E_SECONDS": E2E_SECONDS, "BENCH_NICE": NICE,
                         "postgres": "fsync=off, full_page_writes=off, synchronous_commit=on "
                                     "(the test harness's settings)",
                         "ferretdb": "PostgreSQL store set up by deploy/ferretdb-store.sql, "
                                     "fsync=off (the test harness's settings)",
                         # The defaults of the user-api under test; a setting it does not have
                         # is left out.
                         **{k: v for k, v in (
                             ("user_api_threads",
                              service_default("user-api", "USER_API_THREADS", required=False)),
                             ("user_api_pg_connections",
                              service_default("user-api", "USER_API_PG_CONNECTIONS",
                                              required=False))) if v is not None},
                         "relay_batch_size": service_default("outbox-relay", "RELAY_BATCH_SIZE"),
                         "relay_pipeline": service_default("outbox-relay", "RELAY_PIPELINE"),
                         "consumer_batch": service_default("notification-consumer",
                                                           "CONSUMER_BATCH"),
                         "consumer_lanes": consumer_lanes()}}


def main():
    # SIGTERM (a timeout, Ctrl-C through make) unwinds like Ctrl-C, so every Stack closes and the
    # harness's atexit hook kills what was started.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)
    OUT.mkdir(parents=True, exist_ok=True)
    results["machine"] = machine()
    t0 = time.monotonic()
    if wanted(1) or wanted(2):
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
