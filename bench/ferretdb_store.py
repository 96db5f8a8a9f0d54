"""What one event costs FerretDB as the copy grows, by store (docs/benchmarks.md, "FerretDB's
store"): bench/bin/mongo_upsert (the consumer's versioned upsert and history insert, one event at a
time) against a fresh FerretDB v1.24 of each kind, one after the other on the same machine:

  store   PostgreSQL as the project sets it up (deploy/ferretdb-store.sql: a GIN index on
          (_jsonb->'_id') jsonb_path_ops for every collection, plan_cache_mode = force_custom_plan)
  gin     the same index, the planner's default plan cache mode
  plain   PostgreSQL as FerretDB sets it up alone (its btree _id index only)
  sqlite  FerretDB's SQLite backend, the store before this one

PostgreSQL and SQLite run with the test harness's settings, as in `make bench` (fsync=off;
synchronous(off)). For each PostgreSQL store it reports the scans of the collection's table, read
from PostgreSQL's statistics after FerretDB stopped (its sessions hand their counts over as they
end). It measures and reports; it asserts nothing.

    .venv/bin/python bench/ferretdb_store.py [--events N] [--users N] [--stores store,gin,plain]

Events: version (g - 1) / users + 1 of user (g - 1) % users + 1, as mongo_upsert makes them; by
default one new user per event.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "integration"))
import harness  # noqa: E402

UPSERT = ROOT / "bench" / "bin" / "mongo_upsert"


class PlainFerretDB(harness.FerretDB):
    """FerretDB on a database of the harness's store without the project's set-up."""

    def _prepare(self):
        self.store = harness.ferretdb_store()
        if not self._database_made:
            self.store.sql(f'CREATE DATABASE "{self.database}" OWNER ferretdb', dbname="postgres")
            self._database_made = True


class GinFerretDB(harness.FerretDB):
    """The project's set-up without plan_cache_mode = force_custom_plan."""

    def _prepare(self):
        made = self._database_made
        super()._prepare()
        if not made:
            self.store.sql(f'ALTER DATABASE "{self.database}" RESET plan_cache_mode', dbname="postgres")


class SQLiteFerretDB(harness.FerretDB):
    """FerretDB on SQLite in its folder, as the harness ran it before (synchronous(off))."""

    def _prepare(self):
        (self.dir / "data").mkdir(exist_ok=True)

    def _argv(self):
        return [harness.tool("FERRETDB"), "--handler=sqlite",
                f"--sqlite-url=file:{self.dir / 'data'}/?_pragma=synchronous(off)",
                f"--listen-addr=127.0.0.1:{self.port}", f"--state-dir={self.dir}", "--debug-addr=-",
                "--telemetry=disable", "--log-level=warn"]


STORES = {"store": harness.FerretDB, "gin": GinFerretDB, "plain": PlainFerretDB,
          "sqlite": SQLiteFerretDB}


def table_scans(ferret: harness.FerretDB) -> dict:
    """Scans of the table of bench_db.user_notifications, once FerretDB's sessions have ended."""
    with ferret.pg_connect() as c:
        harness.wait_for(lambda: c.execute("SELECT count(*) = 0 FROM pg_stat_activity WHERE "
                                           "datname = current_database() AND "
                                           "application_name = 'FerretDB'").fetchone()[0],
                         timeout=30, what="FerretDB's sessions to end")
        c.execute("SELECT pg_stat_clear_snapshot()")
        table = c.execute("SELECT _jsonb->>'table' FROM bench_db._ferretdb_database_metadata "
                          "WHERE _jsonb->>'_id' = 'user_notifications'").fetchone()[0]
        seq, seq_rows = c.execute("SELECT seq_scan, seq_tup_read FROM pg_stat_user_tables "
                                  "WHERE schemaname = 'bench_db' AND relname = %s", (table,)).fetchone()
        idx = dict(c.execute("SELECT indexrelname, idx_scan FROM pg_stat_user_indexes "
                             "WHERE schemaname = 'bench_db' AND relname = %s", (table,)).fetchall())
    return {"table": table, "seq_scan": seq, "seq_tup_read": seq_rows, "idx_scan": idx}


def index_kind(name: str) -> str:
    """GIN _id (deploy/ferretdb-store.sql's), btree _id (FerretDB's own), or the name."""
    return "GIN _id" if name.endswith("_id_gin") else "btree _id" if "__id__" in name else name


def run(kind: str, events: int, users: int) -> dict:
    ferret = STORES[kind]()
    try:
        ferret.start()
        t0 = time.monotonic()
        r = subprocess.run([str(UPSERT), ferret.uri, str(events), "1", str(users)],
                           capture_output=True, text=True, timeout=6 * 3600)
        if r.returncode != 0:
            raise RuntimeError(f"mongo_upsert exited {r.returncode}: {r.stderr.strip()}")
        out = {"store": kind, "events": events, "users": users, **json.loads(r.stdout),
               "wall_s": round(time.monotonic() - t0, 1)}
        if kind != "sqlite":
            ferret.stop()
            out["scans"] = table_scans(ferret)
        return out
    finally:
        ferret.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--events", type=int, default=0, help="default: --users (one event per user)")
    ap.add_argument("--stores", default="store,gin,plain", help=f"from {','.join(STORES)}")
    a = ap.parse_args()
    if not UPSERT.exists():
        sys.exit(f"{UPSERT.relative_to(ROOT)} is not built: make bench builds it")
    events = a.events or a.users
    print("| store | users | events | events/s | ms per event, first → last tenth | p99 ms | "
          "table scans | index scans |")
    print("|---|---:|---:|---:|---|---:|---:|---|")
    for kind in a.stores.split(","):
        r = run(kind.strip(), events, a.users)
        s = r.get("scans")
        seq = f"{s['seq_scan']:,} ({s['seq_tup_read']:,} rows)" if s else "–"
        idx = ", ".join(f"{index_kind(n)} {v:,}" for n, v in s["idx_scan"].items()) if s else "–"
        print(f"| {r['store']} | {r['users']:,} | {r['events']:,} | {r['rate']:,.0f} | "
              f"{r['first_tenth_mean_ms']:.2f} → {r['last_tenth_mean_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{seq} | {idx} |", flush=True)
        print(json.dumps(r), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
