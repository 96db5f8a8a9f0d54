"""Least privilege in PostgreSQL (migrations/0008_roles.sql): each process's role can do what its
statements need (the rest of the suite runs every service as its role) and nothing else; the
password comes from libpq's own sources when POSTGRES_PASSWORD is empty; POSTGRES_SSLMODE is
checked and reaches libpq; `make infra` upgrades a cluster made before the roles."""
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
import requests

import harness
from harness import PG_ROLES, Postgres, role_password

API, RELAY, AUDIT, OWNER = (PG_ROLES[n] for n in ("user-api", "outbox-relay", "audit", "migrate"))
SERVICE_ROLES = (API, RELAY, AUDIT)

OUTBOX_ROW = ("INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, payload) "
              "VALUES (gen_random_uuid(), 1, 'user_created', 1, 'user.events.created', '{}')")
SNAPSHOT = "SELECT * FROM outbox_snapshot_users(0, 10, 'user_snapshot', 'user.events.snapshot', 2::smallint)"
REPAIR = "SELECT * FROM audit_repair_snapshot('{1}', 'user_snapshot', 'user.events.snapshot', 2::smallint)"
REPAIR_DELETE = ("SELECT * FROM audit_repair_delete('{1}', '{2}', 'user_deleted', "
                 "'user.events.deleted', 2::smallint)")

# What each role must not do: every statement is valid, so only the privilege check refuses it.
FORBIDDEN = {
    API: ["DELETE FROM outbox", "SELECT * FROM outbox", "UPDATE outbox SET published_at = now()",
          "SELECT * FROM outbox_dead", "SELECT * FROM outbox_stream",
          "UPDATE users SET id = id + 1", "UPDATE users SET created_at = now()",
          "INSERT INTO users (id, name, email) VALUES (99, 'a', 'a@example.com')",
          "TRUNCATE users", "SELECT * FROM schema_migrations", SNAPSHOT, REPAIR],
    RELAY: ["SELECT name, email FROM users", "UPDATE users SET name = 'x'", "DELETE FROM users",
            OUTBOX_ROW, "UPDATE outbox SET payload = '{}'", "UPDATE outbox SET subject = 'x'",
            "SELECT * FROM outbox_dead", "DELETE FROM outbox_dead", "SELECT * FROM idempotency_keys",
            "TRUNCATE outbox", REPAIR, REPAIR_DELETE],
    AUDIT: ["SELECT email FROM users", "SELECT * FROM users",
            "INSERT INTO users (name, email) VALUES ('a', 'a@example.com')",
            "UPDATE users SET version = version", "DELETE FROM users", "SELECT * FROM outbox",
            OUTBOX_ROW, "DELETE FROM outbox", "SELECT * FROM outbox_pending",
            "SELECT * FROM idempotency_keys", "UPDATE outbox_stream SET high_seq = 0", SNAPSHOT],
}
# Nobody but the owner creates anything in the schema or the database.
CREATE = ["CREATE TABLE public.mine (a int)", "CREATE VIEW public.mine AS SELECT 1",
          "CREATE FUNCTION public.mine() RETURNS int LANGUAGE sql RETURN 1", "CREATE SCHEMA mine"]


@pytest.fixture(scope="module")
def roles_db():
    pg = Postgres(template=Postgres.template(migrated=True))
    pg.start()
    pg.sql("INSERT INTO users (name, email) VALUES ('Ann', 'ann@example.com')")
    yield pg
    pg.close()


@pytest.mark.parametrize("role,statement",
                         [(r, s) for r, ss in FORBIDDEN.items() for s in ss]
                         + [(r, s) for r in SERVICE_ROLES for s in CREATE])
def test_a_role_may_not_do_what_its_process_never_does(roles_db, role, statement):
    with roles_db.connect_as(role) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute(statement)


def test_no_role_is_a_superuser_or_may_create_roles_or_databases(roles_db):
    rows = roles_db.sql("SELECT rolname, rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication "
                        "OR rolbypassrls FROM pg_roles WHERE rolname = ANY (%s) ORDER BY 1",
                        list(PG_ROLES.values()))
    assert rows == [(r, False) for r in sorted(PG_ROLES.values())]


def test_the_owner_owns_the_schema_and_the_services_reach_only_their_tables(roles_db):
    owned = roles_db.sql("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class "
                         "WHERE relnamespace = 'public'::regnamespace")
    assert owned == [(OWNER,)]
    granted = roles_db.sql(
        "SELECT DISTINCT grantee, table_name FROM information_schema.role_table_grants "
        "WHERE grantee = ANY (%s) UNION SELECT DISTINCT grantee, table_name "
        "FROM information_schema.column_privileges WHERE grantee = ANY (%s) ORDER BY 1, 2",
        list(SERVICE_ROLES), list(SERVICE_ROLES))
    assert granted == [(API, "idempotency_keys"), (API, "outbox"), (API, "users"),
                       (AUDIT, "users"),
                       (RELAY, "outbox"), (RELAY, "outbox_dead"), (RELAY, "outbox_stream")]


def test_the_relays_snapshot_and_the_repair_write_only_events(roles_db):
    """Their functions run as the owner, and write the users' state to the outbox, nothing else."""
    with roles_db.connect_as(RELAY) as c:
        assert c.execute(SNAPSHOT).fetchone()[0] == 1
    with roles_db.connect_as(AUDIT) as c:
        assert c.execute(REPAIR).fetchall() == [(1, 1, True)]   # the snapshot waits already
    events = roles_db.sql("SELECT event_type, payload->>'email' FROM outbox WHERE aggregate_id = 1")
    assert events == [("user_snapshot", "ann@example.com")]


# --- where the password comes from ----------------------------------------------------------

def api_env(pg, **extra):
    return dict(pg.env_for("user-api"), USER_API_PORT=harness.free_port(), USER_API_BIND="127.0.0.1",
                NATS_URL=f"nats://127.0.0.1:{harness.free_port()}", **extra)


@pytest.mark.parametrize("source", ["PGPASSWORD", "PGPASSFILE"])
def test_an_empty_password_is_taken_from_libpqs_sources(db, services, tmp_path, source):
    pw = role_password(API)
    if source == "PGPASSWORD":
        extra = {"PGPASSWORD": pw}
    else:
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"127.0.0.1:{db.port}:{db.DB}:{API}:{pw}\n")
        os.chmod(pgpass, 0o600)   # libpq ignores a password file others can read
        extra = {"PGPASSFILE": str(pgpass)}
    api = services.start("user-api", api_env(db, POSTGRES_PASSWORD="", **extra))
    harness.wait_for(lambda: requests.get(api.url + "/readyz", timeout=2).status_code == 200, 15,
                     what="user-api ready on the password of " + source)
    r = requests.post(api.url + "/users", json={"name": "Pat", "email": f"pat-{source}@example.com"},
                      timeout=5)
    assert r.status_code == 201, r.text
    assert db.sql("SELECT usename FROM pg_stat_activity WHERE application_name = 'user-api' "
                  "LIMIT 1") == [(API,)]


def test_an_empty_password_is_no_password_at_all(db, tmp_path):
    """Not "postgres": the superuser's password here is postgres, and the login must fail."""
    env = dict(db.env, POSTGRES_PASSWORD="", PGPASSFILE=str(tmp_path / "none"))
    r = harness.run_binary("migrate", "status", env=env, timeout=30)
    assert r.returncode == 1
    assert 'could not connect to PostgreSQL at 127.0.0.1' in r.stderr
    assert 'as "postgres"' in r.stderr and "no password supplied" in r.stderr, r.stderr


def test_a_wrong_password_is_named_by_its_role_and_never_shown(db):
    secret = "Wr0ng-s3cret-n0t-to-show"
    env = dict(db.env_for("migrate"), POSTGRES_PASSWORD=secret)
    r = harness.run_binary("migrate", "status", env=env, timeout=30)
    assert r.returncode == 1
    assert f'as "{OWNER}"' in r.stderr and "password authentication failed" in r.stderr, r.stderr
    assert secret not in r.stdout + r.stderr
    check = harness.run_binary("migrate", "--check", env=env)
    assert check.returncode == 0 and "POSTGRES_PASSWORD=********" in check.stdout
    assert secret not in check.stdout + check.stderr


# --- TLS settings ---------------------------------------------------------------------------

@pytest.mark.parametrize("binary", ["user-api", "outbox-relay", "audit", "migrate"])
def test_an_unknown_sslmode_is_refused_naming_the_setting(binary):
    r = harness.run_binary(binary, "--check", env={"POSTGRES_SSLMODE": "required"})
    assert r.returncode == 2
    assert (f'{binary}: invalid POSTGRES_SSLMODE "required": expected disable, allow, prefer, '
            f'require, verify-ca or verify-full') in r.stderr, r.stderr
    ok = harness.run_binary(binary, "--check", env={"POSTGRES_SSLMODE": "verify-full"})
    assert ok.returncode == 0 and "POSTGRES_SSLMODE=verify-full" in ok.stdout, ok.stderr


def test_sslmode_require_against_a_server_without_tls_fails_clearly(db):
    r = harness.run_binary("migrate", "status", env=dict(db.env, POSTGRES_SSLMODE="require"),
                           timeout=30)
    assert r.returncode == 1
    assert "could not connect to PostgreSQL at 127.0.0.1" in r.stderr
    assert "server does not support SSL, but SSL was required" in r.stderr, r.stderr


def self_signed(folder, name):
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_verify_full_checks_the_server_against_sslrootcert(tmp_path):
    """The harness's PostgreSQL with TLS (tls=): verify-full passes with the server's certificate
    as the root and fails with another one."""
    cert, key = self_signed(tmp_path, "server")
    other, _ = self_signed(tmp_path, "other")
    pg = Postgres(template=Postgres.template(migrated=True), tls=(cert, key))
    try:
        pg.start()
        env = dict(pg.env_for("migrate"), POSTGRES_SSLMODE="verify-full")
        r = harness.run_binary("migrate", "status", env=dict(env, POSTGRES_SSLROOTCERT=str(cert)))
        assert r.returncode == 0, r.stderr
        r = harness.run_binary("migrate", "status", env=dict(env, POSTGRES_SSLROOTCERT=str(other)))
        assert r.returncode == 1 and "certificate verify failed" in r.stderr, r.stderr
    finally:
        pg.close()


# --- make infra on a cluster made before the roles ------------------------------------------

def infra(env, *action):
    return subprocess.run(["bash", str(harness.REPO_ROOT / "deploy" / "infra.sh"), *action],
                          env=env, capture_output=True, text=True, timeout=180)


def read_env(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if line and not line.startswith("#"))


def test_make_infra_upgrades_a_cluster_made_before_the_roles(tmp_path):
    # The stack before the roles: superuser postgres with the password postgres over TCP, the
    # schema migrated (0001..0007) by it.
    old = Postgres(template=Postgres.template(migrated=False))
    old_dir = tmp_path / "migrations"
    old_dir.mkdir()
    for f in (harness.REPO_ROOT / "migrations").glob("000[1-7]_*.sql"):
        shutil.copy(f, old_dir / f.name)
    run_dir = tempfile.mkdtemp(prefix="it-infra-roles-", dir="/tmp")
    os.chmod(run_dir, 0o755)   # the server runs as `postgres` and must reach its folder
    port = harness.free_port()
    # Only PostgreSQL: NATS and MongoDB are "external" (nothing listens there).
    env = harness.service_env(RUN_DIR=run_dir, POSTGRES_PORT=port,
                              NATS_URL=f"nats://127.0.0.1:{harness.free_port()}",
                              MONGODB_URI=f"mongodb://127.0.0.1:{harness.free_port()}/")
    try:
        old.start()
        r = subprocess.run([str(harness.bin_dir() / "migrate"), "up"], capture_output=True, text=True,
                           env=harness.service_env(old.env, MIGRATIONS_DIR=old_dir), timeout=60)
        assert r.returncode == 0, r.stderr
        old.sql("INSERT INTO users (name, email) VALUES ('Old', 'old@example.com')")
        old.stop()
        subprocess.run(["cp", "-a", str(old.data), os.path.join(run_dir, "pg")], check=True)

        r = infra(env, "start")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "removing the password of superuser postgres" in r.stdout, r.stdout
        assert "handing the schema to user_sync_owner" in r.stdout
        files = {p: os.path.join(run_dir, f"{p}.env") for p in
                 ("user-api", "outbox-relay", "notification-consumer", "migrate", "audit")}
        for f in files.values():
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
        assert stat.S_IMODE(os.stat(os.path.join(run_dir, "secrets")).st_mode) == 0o700
        first = {p: read_env(Path(f)) for p, f in files.items()}
        api = first["user-api"]
        assert api["POSTGRES_USER"] == API and api["POSTGRES_PORT"] == str(port)
        with psycopg.connect(host=api["POSTGRES_HOST"], port=api["POSTGRES_PORT"],
                             user=api["POSTGRES_USER"], password=api["POSTGRES_PASSWORD"],
                             dbname=api["POSTGRES_DB"]) as c:
            assert c.execute("SELECT name FROM users").fetchall() == [("Old",)]
        with psycopg.connect(host=os.path.join(run_dir, "pg"), port=port, user="postgres",
                             dbname="users_db") as c:
            assert {o for (o,) in c.execute("SELECT DISTINCT tableowner FROM pg_tables "
                                            "WHERE schemaname = 'public'")} == {OWNER}
            assert c.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == 8
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(host="127.0.0.1", port=port, user="postgres", password="postgres",
                            dbname="users_db", connect_timeout=5)

        # A second start: the same passwords, nothing more to hand over.
        assert infra(env, "stop").returncode == 0
        r = infra(env, "start")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "handing the schema" not in r.stdout and "removing the password" not in r.stdout
        assert {p: read_env(Path(f)) for p, f in files.items()} == first
    finally:
        infra(env, "stop")
        old.close()
        shutil.rmtree(run_dir, ignore_errors=True)
