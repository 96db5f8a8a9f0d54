"""bin/migrate: applies the migrations in order, each once, under a lock; refuses changed files;
a failing migration leaves nothing behind."""
import os
import shutil
import subprocess
import threading

import pytest

from harness import REPO_ROOT, Postgres, bin_dir

MIGRATIONS = sorted(p.name for p in (REPO_ROOT / "migrations").glob("*.sql"))


def run_migrate(pg, *args, migrations_dir=None):
    env = dict(os.environ, **pg.env)
    if migrations_dir is not None:
        env["MIGRATIONS_DIR"] = str(migrations_dir)
    return subprocess.run([str(bin_dir() / "migrate"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def fresh_pg():
    pg = Postgres(template=Postgres.template(migrated=False))
    pg.start()
    yield pg
    pg.close()


def applied(pg):
    return [(v, n) for v, n in pg.sql("SELECT version, name FROM schema_migrations ORDER BY version")]


def test_up_applies_every_file_once_and_status_lists_them(fresh_pg):
    pending = run_migrate(fresh_pg, "status")
    assert pending.returncode == 0, pending.stderr
    assert pending.stdout.count("pending") == len(MIGRATIONS)
    first = run_migrate(fresh_pg, "up")
    assert first.returncode == 0, first.stderr
    assert [n for _, n in applied(fresh_pg)] == MIGRATIONS
    again = run_migrate(fresh_pg)  # "up" is the default
    assert again.returncode == 0 and "0 applied now" in again.stderr
    assert len(applied(fresh_pg)) == len(MIGRATIONS)
    status = run_migrate(fresh_pg, "status")
    assert status.stdout.count("applied") == len(MIGRATIONS) and "pending" not in status.stdout
    tables = {r[0] for r in fresh_pg.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"users", "outbox", "outbox_dead", "idempotency_keys", "schema_migrations"} <= tables


def test_two_migrators_at_once_apply_each_file_once(fresh_pg):
    results = []
    threads = [threading.Thread(target=lambda: results.append(run_migrate(fresh_pg, "up")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert [n for _, n in applied(fresh_pg)] == MIGRATIONS


def test_a_changed_applied_file_is_refused(fresh_pg, tmp_path):
    assert run_migrate(fresh_pg, "up").returncode == 0
    for name in MIGRATIONS:
        shutil.copy(REPO_ROOT / "migrations" / name, tmp_path / name)
    (tmp_path / MIGRATIONS[0]).write_text((tmp_path / MIGRATIONS[0]).read_text() + "\n-- edited\n")
    r = run_migrate(fresh_pg, "up", migrations_dir=tmp_path)
    assert r.returncode == 1
    assert f'migration "{MIGRATIONS[0]}" was changed after it was applied' in r.stderr


def test_a_failing_migration_leaves_nothing_and_later_ones_wait(fresh_pg, tmp_path):
    for name in MIGRATIONS:
        shutil.copy(REPO_ROOT / "migrations" / name, tmp_path / name)
    (tmp_path / "9000_bad.sql").write_text("CREATE TABLE half_done (x int);\nSELECT 1 / 0;\n")
    (tmp_path / "9001_after.sql").write_text("CREATE TABLE after_bad (x int);\n")
    r = run_migrate(fresh_pg, "up", migrations_dir=tmp_path)
    assert r.returncode == 1 and "9000_bad.sql" in r.stderr and "division by zero" in r.stderr
    assert [n for _, n in applied(fresh_pg)] == MIGRATIONS
    assert fresh_pg.sql("SELECT to_regclass('half_done'), to_regclass('after_bad')") == [(None, None)]
    # Fixed, it goes on from there.
    (tmp_path / "9000_bad.sql").write_text("CREATE TABLE half_done (x int);\n")
    assert run_migrate(fresh_pg, "up", migrations_dir=tmp_path).returncode == 0
    assert [n for _, n in applied(fresh_pg)][-2:] == ["9000_bad.sql", "9001_after.sql"]


def test_badly_named_files_and_unreachable_server_are_clear_errors(fresh_pg, tmp_path):
    (tmp_path / "1_short.sql").write_text("SELECT 1;\n")
    r = run_migrate(fresh_pg, "up", migrations_dir=tmp_path)
    assert r.returncode != 0 and "not named NNNN_name.sql" in r.stderr
    env = dict(os.environ, **{**fresh_pg.env, "POSTGRES_PORT": "1"})
    r = subprocess.run([str(bin_dir() / "migrate"), "up"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "could not connect to PostgreSQL" in r.stderr
