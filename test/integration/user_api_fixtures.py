"""Fixtures and helpers of the user-api tests: a migrated database, a running user-api, and a
client that checks answers through HTTP and rows through SQL. Import with
`from user_api_fixtures import *`.

Every user-api test scans the API's log for sanitizer reports when it stops it, so these tests run
the sanitizer build (harness.san_binary: bin-san/user-api, or $SAN_BIN_DIR; `make test` builds it)
and fail, rather than check nothing, when it is missing or stale."""
import contextlib
import datetime
import json
import os
import re
import time
import uuid

import psycopg
import pytest
import requests

import harness

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")

__all__ = ["pg_db", "start_api", "api", "fresh_api", "own_pg_api", "api_before_pg"]


# --- helpers -----------------------------------------------------------------------------------

def unique_email():
    return f"u-{uuid.uuid4().hex}@example.com"


def parse_ts(s):
    """RFC 3339 UTC to an aware datetime, keeping microseconds (nanoseconds are cut)."""
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z$", s)
    assert m, s
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    return datetime.datetime.fromisoformat(m.group(1) + "." + frac + "+00:00")


def assert_problem(r, status, field=None):
    """r is a problem+json answer with this status (and field, or one of a tuple of fields);
    returns the body."""
    assert r.status_code == status, (r.status_code, r.headers.get("Content-Type"), r.text[:500])
    ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith("application/problem+json"), (ctype, r.text[:500])
    body = r.json()
    for k in ("type", "title", "status", "detail", "request_id"):
        assert k in body, (k, body)
    assert body["status"] == status, body
    assert isinstance(body["detail"], str) and body["detail"], body
    if field is not None:
        fields = field if isinstance(field, tuple) else (field,)
        assert body.get("field") in fields, (fields, body)
    return body


def poll(fn, timeout, what, interval=0.1):
    """Calls fn until it returns something other than None or False (returned; a 503 Response is
    falsy, hence not plain truthiness) or timeout seconds passed (fail)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v is not None and v is not False:
                return v
            last = v
        except requests.RequestException as e:
            last = e
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def base_env(pg=None, **extra):
    """Environment for user-api: the settings of pg (a harness.Postgres) or the defaults, and
    NATS_URL naming a port where nothing listens (the nudge is optional)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POSTGRES_", "USER_API_", "NATS_", "LOG_"))}
    env.update({"NATS_URL": f"nats://127.0.0.1:{harness.free_port()}", "LOG_LEVEL": "info"})
    if pg is not None:
        env.update(pg.env)
    env.update({k: str(v) for k, v in extra.items()})
    return env


class UserApi:
    """A running user-api and the database behind it."""

    def __init__(self, service, pg):
        self.service = service
        self.proc = service.proc
        self.port = service.port
        self.pg = pg
        self.base = f"http://127.0.0.1:{self.port}"

    # HTTP -------------------------------------------------------------------------------------
    def request(self, method, path, **kw):
        kw.setdefault("timeout", 15)
        kw.setdefault("allow_redirects", False)
        return requests.request(method, self.base + path, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def create(self, name="Test User", email=None):
        r = self.post("/users", json={"name": name, "email": email or unique_email()})
        assert r.status_code == 201, (r.status_code, r.text)
        return r.json()

    def process_alive(self):
        return self.proc.poll() is None

    # SQL --------------------------------------------------------------------------------------
    def sql(self, query, params=None):
        with psycopg.connect(self.pg.dsn, autocommit=True, connect_timeout=10) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else []

    def sql_one(self, query, params=None):
        rows = self.sql(query, params)
        assert len(rows) == 1, rows
        return tuple(rows[0])

    def counts(self):
        return tuple(self.sql_one("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM outbox)"))

    def outbox_for(self, user_id):
        rows = self.sql("SELECT event_id, aggregate_id, event_type, version, subject, headers, payload, "
                        "created_at FROM outbox WHERE aggregate_id = %s ORDER BY id", (user_id,))
        keys = ["event_id", "aggregate_id", "event_type", "version", "subject", "headers", "payload",
                "created_at"]
        out = []
        for row in rows:
            d = dict(zip(keys, row))
            for k in ("headers", "payload"):
                if isinstance(d[k], str):
                    d[k] = json.loads(d[k])
            out.append(d)
        return out

    @contextlib.contextmanager
    def unchanged(self):
        """Asserts that the block adds no row to users, outbox or idempotency_keys and changes no
        user."""
        q = ("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM outbox), "
             "(SELECT coalesce(max(id), 0) FROM outbox), (SELECT count(*) FROM idempotency_keys), "
             "(SELECT coalesce(sum(version), 0) FROM users)")
        before = self.sql_one(q)
        yield
        after = self.sql_one(q)
        assert after == before, f"rows changed: (users, outbox, max outbox id, idempotency keys, " \
                                f"sum of versions) {before} -> {after}"

    # PostgreSQL outages (only for APIs on their own PostgreSQL) --------------------------------
    def stop_postgres(self):
        """Fast shutdown: PostgreSQL ends every session, then exits."""
        self.pg.stop()

    def kill_postgres(self):
        self.pg.kill()

    def start_postgres(self):
        """Starts it again on the same port with the same data."""
        self.pg.start()


# --- fixtures ----------------------------------------------------------------------------------

def new_pg():
    """A PostgreSQL of its own (a copy of the session's migrated template), not started."""
    return harness.Postgres(template=harness.Postgres.template(migrated=True))


def user_api_binary():
    """The sanitizer build of user-api (harness.san_binary); fails the test when there is none."""
    try:
        return str(harness.san_binary("user-api"))
    except RuntimeError as e:
        pytest.fail(str(e))


def launch(pg, **env):
    """Starts the sanitizer build of user-api on a free port against pg; returns a UserApi. Waits
    for /healthz only, so it also works while pg is down."""
    port = harness.free_port()
    svc = harness.Service("user-api", env=base_env(pg, USER_API_PORT=port, USER_API_BIND="127.0.0.1", **env),
                          port=port, binary=user_api_binary())
    svc.start()
    return UserApi(svc, pg)


def close_api(a):
    """Stops the API with SIGTERM: it must exit 0 (which also lets a sanitizer build report leaks
    at exit). A crash or a dirty exit during the test, or a sanitizer report in its log, fails
    the test here."""
    rc = a.service.proc.poll()
    if rc is None:
        rc = a.service.stop(timeout=15)
        crashed = None
    else:
        crashed = rc
    log = a.service.log_text()
    a.service.close()
    if crashed not in (None, 0, -9):   # 0: the test stopped it; -9: a crash failpoint
        pytest.fail(f"{a.service.binary} exited {crashed} during the test; log:\n{log[-4000:]}")
    if rc != 0 and crashed is None:
        pytest.fail(f"{a.service.binary} exited {rc} on SIGTERM; log:\n{log[-4000:]}")
    reports = harness.sanitizer_reports(a.service.binary, log)
    if reports:
        i = log.index(reports[0])
        pytest.fail(f"{a.service.binary} log has a sanitizer report:\n"
                    f"{log[max(0, i - 200):i + 3000]}")


@pytest.fixture(scope="module")
def pg_db():
    """A migrated PostgreSQL shared by the tests of a module."""
    pg = new_pg()
    pg.start()
    yield pg
    pg.close()


@pytest.fixture(scope="module")
def api(pg_db):
    """user-api on the module's PostgreSQL, shared by the tests of the module: tests use
    unique emails and compare row counts before and after, never absolute numbers."""
    a = launch(pg_db)
    yield a
    close_api(a)


@pytest.fixture
def start_api(pg_db):
    """Factory: start_api(**env) starts one more user-api on the module's PostgreSQL; they
    are stopped at the end of the test."""
    started = []

    def start(**env):
        a = launch(pg_db, **env)
        started.append(a)
        return a
    yield start
    for a in started:
        close_api(a)


def api_on_new_pg():
    """user-api on a new, empty, migrated PostgreSQL of its own; closes both after."""
    pg = new_pg()
    pg.start()
    try:
        a = launch(pg)
        yield a
        close_api(a)
    finally:
        pg.close()


@pytest.fixture
def fresh_api():
    """user-api on a new, empty, migrated PostgreSQL of its own."""
    yield from api_on_new_pg()


@pytest.fixture
def own_pg_api():
    """Like fresh_api, for tests that stop, kill and restart PostgreSQL under the API."""
    yield from api_on_new_pg()


@pytest.fixture
def api_before_pg():
    """user-api started while its (migrated) PostgreSQL is down; start_postgres() brings it
    up."""
    pg = new_pg()
    try:
        a = launch(pg)
        yield a
        close_api(a)
    finally:
        pg.close()
