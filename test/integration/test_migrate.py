"""bin/migrate: applies the migrations in order, each once, under a lock; refuses changed files;
a failing migration leaves nothing behind. It runs as the schema's owner (user_sync_owner), as
`make infra` runs it; a superuser's run creates the roles of 0008_roles.sql and hands them a
database migrated before them."""
import os
import shutil
import subprocess
import threading

import pytest

from harness import PG_ROLES, REPO_ROOT, Postgres, bin_dir, service_env

MIGRATIONS = sorted(p.name for p in (REPO_ROOT / "migrations").glob("*.sql"))
ROLES_MIGRATION = "0008_roles.sql"
OWNER = PG_ROLES["migrate"]
# What a database migrated by the superuser before the roles existed holds.
TABLES = ["idempotency_keys", "outbox", "outbox_dead", "outbox_stream", "schema_migrations", "users"]


def run_migrate(pg, *args, migrations_dir=None, superuser=False):
    """bin/migrate as user_sync_owner (the roles must exist: pg.create_roles()), or as the
    superuser."""
    env = service_env(pg.env if superuser else pg.env_for("migrate"))
    if migrations_dir is not None:
        env["MIGRATIONS_DIR"] = str(migrations_dir)
    return subprocess.run([str(bin_dir() / "migrate"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def bare_pg():
    """An empty users_db on a cluster without the roles, as before 0008_roles.sql."""
    pg = Postgres(template=Postgres.template(migrated=False))
    pg.start()
    yield pg
    pg.close()


@pytest.fixture
def fresh_pg(bare_pg):
    """An empty users_db with the roles made as `make infra` makes them."""
    bare_pg.create_roles()
    return bare_pg


def owners(pg):
    return dict(pg.sql("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"))


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
    env = service_env(fresh_pg.env_for("migrate"), POSTGRES_PORT="1")
    r = subprocess.run([str(bin_dir() / "migrate"), "up"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "could not connect to PostgreSQL" in r.stderr


def test_the_owner_owns_what_it_migrates_and_nothing_else_runs_as_superuser(fresh_pg):
    assert run_migrate(fresh_pg, "up").returncode == 0
    assert set(owners(fresh_pg).values()) == {OWNER}
    roles = fresh_pg.sql("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
                         "rolbypassrls FROM pg_roles WHERE rolname = ANY (%s) ORDER BY 1",
                         list(PG_ROLES.values()))
    assert roles == [(r, False, False, False, False, False) for r in sorted(PG_ROLES.values())]


def test_a_superuser_run_creates_the_roles_on_a_cluster_without_them(bare_pg):
    assert bare_pg.sql("SELECT count(*) FROM pg_roles WHERE rolname = ANY (%s)",
                       list(PG_ROLES.values())) == [(0,)]
    r = run_migrate(bare_pg, "up", superuser=True)
    assert r.returncode == 0, r.stderr
    assert bare_pg.sql("SELECT count(*) FROM pg_roles WHERE rolname = ANY (%s) AND rolcanlogin "
                       "AND NOT rolsuper", list(PG_ROLES.values())) == [(len(PG_ROLES),)]
    assert set(owners(bare_pg).values()) == {OWNER}
    # Without a password they cannot log in yet: make infra (or the operator) gives them one.
    assert bare_pg.sql("SELECT count(*) FROM pg_authid WHERE rolname = ANY (%s) AND rolpassword "
                       "IS NOT NULL", list(PG_ROLES.values())) == [(0,)]


def test_the_owner_alone_cannot_create_missing_roles_and_says_how(bare_pg):
    """The owner exists (made by hand), the service roles do not: the migration stops and names
    the way out, and leaves nothing behind."""
    bare_pg.sql(f"CREATE ROLE {OWNER} LOGIN PASSWORD 'pw'")
    bare_pg.sql(f"ALTER DATABASE {bare_pg.DB} OWNER TO {OWNER}")
    env = service_env(bare_pg.env, POSTGRES_USER=OWNER, POSTGRES_PASSWORD="pw")
    r = subprocess.run([str(bin_dir() / "migrate"), "up"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert f'"{ROLES_MIGRATION}"' in r.stderr and 'role "user_sync_api" does not exist' in r.stderr
    assert "may not create it" in r.stderr, r.stderr
    assert ROLES_MIGRATION not in [n for _, n in applied(bare_pg)]


def test_a_database_migrated_by_the_superuser_before_the_roles_is_upgraded(bare_pg, tmp_path):
    """The stack before 0008_roles.sql migrated as postgres: its tables belong to postgres. The
    owner cannot take them (a clear error); one superuser run hands them over with their data;
    from then on migrate runs as the owner and the services as their roles."""
    old = tmp_path / "old"
    old.mkdir()
    for name in MIGRATIONS:
        if name < ROLES_MIGRATION:
            shutil.copy(REPO_ROOT / "migrations" / name, old / name)
    assert run_migrate(bare_pg, "up", migrations_dir=old, superuser=True).returncode == 0
    bare_pg.sql("INSERT INTO users (name, email) VALUES ('Old', 'old@example.com')")
    assert set(owners(bare_pg).values()) == {"postgres"}

    bare_pg.create_roles()   # what make infra does first on such a cluster
    r = run_migrate(bare_pg, "up")
    assert r.returncode == 1
    assert 'could not read schema_migrations as "user_sync_owner": ERROR:  permission denied' in r.stderr
    assert "run bin/migrate up once as a superuser, which hands it to user_sync_owner" in r.stderr

    r = run_migrate(bare_pg, "up", superuser=True)
    assert r.returncode == 0, r.stderr
    assert owners(bare_pg) == {t: OWNER for t in TABLES}
    assert bare_pg.sql("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname IN "
                       "('outbox_pending', 'users_id_seq', 'outbox_id_seq')") == [(OWNER,)] * 3
    assert bare_pg.sql("SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc WHERE pronamespace "
                       "= 'public'::regnamespace") == [(OWNER,)]
    assert run_migrate(bare_pg, "up").stderr.count("0 applied now") == 1
    with bare_pg.connect_as(PG_ROLES["user-api"]) as c:
        assert c.execute("SELECT name FROM users").fetchall() == [("Old",)]
        c.execute("INSERT INTO users (name, email) VALUES ('New', 'new@example.com')")


def test_the_roles_migration_is_idempotent_and_runs_in_every_database_of_a_cluster(fresh_pg):
    assert run_migrate(fresh_pg, "up").returncode == 0
    sql = (REPO_ROOT / "migrations" / ROLES_MIGRATION).read_text()
    before = fresh_pg.sql("SELECT relname, relacl::text FROM pg_class WHERE relnamespace = "
                          "'public'::regnamespace ORDER BY 1")
    for connect in (fresh_pg.connect, lambda: fresh_pg.connect_as(OWNER)):
        with connect() as c:
            c.execute("SET client_min_messages = warning")
            c.execute(sql)
            c.execute(sql)
    assert fresh_pg.sql("SELECT relname, relacl::text FROM pg_class WHERE relnamespace = "
                        "'public'::regnamespace ORDER BY 1") == before
    # Roles are the cluster's: a second database migrates as the owner, finding them there.
    fresh_pg.sql(f"CREATE DATABASE second_db OWNER {OWNER}", dbname="postgres")
    env = service_env(fresh_pg.env_for("migrate"), POSTGRES_DB="second_db")
    r = subprocess.run([str(bin_dir() / "migrate"), "up"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert set(owners_in(fresh_pg, "second_db").values()) == {OWNER}


def test_two_databases_migrated_at_once_by_the_superuser_both_create_the_roles(bare_pg):
    """Both runs find the roles missing; one creates them, the other waits for it and goes on."""
    bare_pg.sql("CREATE DATABASE second_db", dbname="postgres")
    results = []

    def run(db):
        env = service_env(bare_pg.env, POSTGRES_DB=db)
        results.append(subprocess.run([str(bin_dir() / "migrate"), "up"], env=env,
                                      capture_output=True, text=True, timeout=60))
    threads = [threading.Thread(target=run, args=(db,)) for db in (bare_pg.DB, "second_db")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert set(owners_in(bare_pg, "second_db").values()) == {OWNER}


def owners_in(pg, dbname):
    with pg.connect(dbname) as c:
        return dict(c.execute("SELECT tablename, tableowner FROM pg_tables "
                              "WHERE schemaname = 'public'").fetchall())
