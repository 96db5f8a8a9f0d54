"""FerretDB's PostgreSQL store, as the harness and `make run` set it up (deploy/ferretdb-store.sql):
every collection table FerretDB creates gets a GIN index on (_jsonb->'_id'), the consumer's
versioned upsert finds its document through that index instead of scanning the collection, and
the database plans each statement for its parameters (plan_cache_mode = force_custom_plan)."""
import os
import shutil
import subprocess
import tempfile
import time

import psycopg
import pymongo
import pytest
from bson.int64 import Int64

import harness

DB, COLL = "notifications_db", "store_probe"


def collection_table(c: psycopg.Connection, db: str, coll: str) -> str:
    """The table FerretDB keeps collection coll of database db in, from its metadata table."""
    row = c.execute(f'SELECT _jsonb->>\'table\' FROM "{db}"._ferretdb_database_metadata '
                    "WHERE _jsonb->>'_id' = %s", (coll,)).fetchone()
    assert row, f"FerretDB has no table for {db}.{coll}"
    return row[0]


def gin_indexes(c: psycopg.Connection, schema: str, table: str) -> list[str]:
    """Names of the GIN indexes on (_jsonb->'_id') jsonb_path_ops of schema.table."""
    rows = c.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
                     "AND tablename = %s", (schema, table)).fetchall()
    return [name for name, d in rows
            if "USING gin" in d and "(_jsonb -> '_id'::text)" in d and "jsonb_path_ops" in d]


def scans(ferret, schema: str, table: str, index: str) -> tuple[int, int]:
    """(sequential scans of the table, scans of the index) once every session of FerretDB has
    counted its own. A session hands its counts over when idle for ten seconds or when it ends,
    so FerretDB is stopped for the reading (which also shows that its data outlives a restart)."""
    ferret.stop()
    with ferret.pg_connect() as c:
        harness.wait_for(lambda: c.execute("SELECT count(*) = 0 FROM pg_stat_activity "
                                           "WHERE datname = current_database() "
                                           "AND application_name = 'FerretDB'").fetchone()[0],
                         timeout=10, what="FerretDB's sessions to end")
        c.execute("SELECT pg_stat_clear_snapshot()")
        seq = c.execute("SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = %s "
                        "AND relname = %s", (schema, table)).fetchone()[0]
        idx = c.execute("SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = %s "
                        "AND indexrelname = %s", (schema, index)).fetchone()[0]
    ferret.start()
    return seq, idx


def test_versioned_upserts_find_the_document_through_the_gin_index(ferret):
    users = 400
    with ferret.client() as client:
        client[DB][COLL].insert_many([{"_id": Int64(u), "user_id": Int64(u), "name": f"user {u}",
                                       "version": Int64(1)} for u in range(1, users + 1)])
    with ferret.pg_connect() as pg:
        table = collection_table(pg, DB, COLL)
        indexes = gin_indexes(pg, DB, table)
    assert len(indexes) == 1, f"GIN indexes on {DB}.{table}: {indexes}"
    with ferret.pg_connect() as pg:
        options = pg.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
                             (f'"{DB}"."{indexes[0]}"',)).fetchone()[0]
    assert "fastupdate=off" in (options or []), options  # no pending list for lookups to read
    # (Building the two indexes of the new table counted as two sequential scans.)
    seq0, idx0 = scans(ferret, DB, table, indexes[0])

    with ferret.client() as client:
        coll = client[DB][COLL]

        # The consumer's apply: version 2 of every other user, then version 3, and a stale
        # version 2 again (the filter fails, the upsert's insert collides: 11000, a no-op).
        upserts = stale = 0
        for v in (2, 3, 2):
            for u in range(1, users + 1, 2):
                try:
                    coll.update_one({"_id": Int64(u), "version": {"$lt": Int64(v)}},
                                    {"$set": {"user_id": Int64(u), "name": f"user {u} v{v}",
                                              "version": Int64(v), "deleted": False}}, upsert=True)
                except pymongo.errors.DuplicateKeyError as e:
                    assert e.code == 11000
                    stale += 1
                upserts += 1
        assert upserts == 600 and stale == 200

    # Every upsert read its document through the index (FerretDB reads the document, then
    # writes), and none scanned the table.
    seq, idx = scans(ferret, DB, table, indexes[0])
    assert idx - idx0 >= upserts, f"{idx - idx0} scans of {indexes[0]} for {upserts} upserts"
    assert seq == seq0, f"{seq - seq0} sequential scans of {DB}.{table} during the upserts"
    with ferret.client() as client:
        coll = client[DB][COLL]
        assert coll.count_documents({"version": 3}) == users // 2
        assert coll.find_one({"_id": Int64(1)})["name"] == "user 1 v3"


def test_database_plans_for_the_parameters(ferret):
    with ferret.client() as client:
        coll = client[DB][COLL]
        coll.insert_many([{"_id": Int64(u), "version": Int64(1)} for u in range(1, 11)])
        with ferret.pg_connect() as pg:
            setting = pg.execute(
                "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                "WHERE d.datname = %s AND s.setrole = 0", (ferret.database,)).fetchone()
            assert setting and "plan_cache_mode=force_custom_plan" in setting[0]
            assert pg.execute("SHOW plan_cache_mode").fetchone()[0] == "force_custom_plan"
            # FerretDB's read, prepared as its driver prepares it, on a collection that is small
            # and analyzed (autovacuum does that early), past the five executions after which
            # PostgreSQL may settle on a generic plan: with `_jsonb->$1` that plan scans the table,
            # and a session would keep it while the collection grows. Planned for the values each
            # time, the read finds the document through the index once the collection is large.
            table = collection_table(pg, DB, COLL)
            pg.execute(f'ANALYZE "{DB}"."{table}"')
            pg.execute(f'PREPARE by_id(text, jsonb) AS SELECT _jsonb FROM "{DB}"."{table}" '
                       "WHERE _jsonb->$1 @> $2")
            for u in range(1, 11):
                pg.execute(f"EXECUTE by_id('_id', '{u}')").fetchall()
            coll.insert_many([{"_id": Int64(u), "version": Int64(1)} for u in range(11, 3001)])
            plan = "\n".join(r[0] for r in pg.execute("EXPLAIN EXECUTE by_id('_id', '7')").fetchall())
            assert f"Index Scan on {gin_indexes(pg, DB, table)[0]}" in plan, plan


def test_set_up_is_idempotent_and_indexes_existing_collections(ferret):
    with ferret.client() as client:
        client[DB][COLL].insert_one({"_id": Int64(1)})
    with ferret.pg_connect() as pg:
        table = collection_table(pg, DB, COLL)
        [index] = gin_indexes(pg, DB, table)
        # A collection made before the trigger existed: applying the file again indexes it, and
        # applying it to a set-up database changes nothing else.
        pg.execute(f'DROP INDEX "{DB}"."{index}"')
        for _ in range(2):
            pg.execute(harness.FERRETDB_STORE_SQL.read_text())
        assert gin_indexes(pg, DB, table) == [index]
        triggers = pg.execute("SELECT evtname FROM pg_event_trigger").fetchall()
        assert triggers == [("ferretdb_id_gin",)]
    # FerretDB's metadata table is no collection: it gets no such index.
    with ferret.pg_connect() as pg:
        assert gin_indexes(pg, DB, "_ferretdb_database_metadata") == []


# --- the dev stack: deploy/infra.sh, which `make run` and `make infra` run -----------------------

def infra(run_dir: str, ports: dict, *action: str) -> subprocess.CompletedProcess:
    env = harness.service_env(ports, RUN_DIR=run_dir)
    return subprocess.run(["bash", str(harness.REPO_ROOT / "deploy" / "infra.sh"), *action],
                          env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def run_dir():
    d = tempfile.mkdtemp(prefix="it-infra-")
    os.chmod(d, 0o755)  # the PostgreSQL servers run as `postgres` and must reach their folders
    ports = {name: harness.free_port() for name in ("POSTGRES_PORT", "NATS_PORT",
                                                     "NATS_MONITOR_PORT", "MONGODB_PORT")}
    yield d, ports
    infra(d, ports, "stop")
    shutil.rmtree(d, ignore_errors=True)


def test_dev_stack_keeps_the_copy_in_a_postgresql_of_its_own(run_dir):
    d, ports = run_dir
    r = infra(d, ports, "start")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PostgreSQL store" in r.stdout, r.stdout
    uri = f"mongodb://127.0.0.1:{ports['MONGODB_PORT']}/"
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        client[DB][COLL].update_one({"_id": Int64(7), "version": {"$lt": Int64(1)}},
                                    {"$set": {"version": Int64(1)}}, upsert=True)

    def store():
        return psycopg.connect(host=os.path.join(d, "ferretdb-pg"), port=5432, user="postgres",
                               dbname="ferretdb", autocommit=True)
    with store() as pg:
        table = collection_table(pg, DB, COLL)
        assert len(gin_indexes(pg, DB, table)) == 1
        assert pg.execute("SHOW plan_cache_mode").fetchone()[0] == "force_custom_plan"
        assert pg.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'ferretdb'").fetchone() == (False,)
    # Never in the application's database (its superuser logs in on the unix socket only).
    with psycopg.connect(host=os.path.realpath(os.path.join(d, "pg")), port=ports["POSTGRES_PORT"],
                         user="postgres", dbname="users_db", autocommit=True) as app:
        assert app.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                           (DB,)).fetchone()[0] == 0

    # A second start (a second `make run`) sets up again over the same data and keeps it.
    r = infra(d, ports, "stop")
    assert r.returncode == 0, r.stdout + r.stderr
    r = infra(d, ports, "start")
    assert r.returncode == 0, r.stdout + r.stderr
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        assert client[DB][COLL].find_one({"_id": Int64(7)})["version"] == 1
    with store() as pg:
        assert len(gin_indexes(pg, DB, collection_table(pg, DB, COLL))) == 1


def test_dev_stack_names_the_way_out_of_the_old_sqlite_store(run_dir):
    d, ports = run_dir
    os.makedirs(os.path.join(d, "ferretdb"))
    open(os.path.join(d, "ferretdb", "notifications_db.sqlite"), "w").close()
    t0 = time.monotonic()
    r = infra(d, ports, "start")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "SQLite" in lines[0] and "make clean-data" in lines[0], r.stderr
    assert time.monotonic() - t0 < 10
    assert not os.path.exists(os.path.join(d, "pg")), "it started something before refusing"
