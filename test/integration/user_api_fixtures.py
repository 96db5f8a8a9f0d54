"""Fixtures and helpers of the user-api tests: a migrated database, a running bin/user-api, and a
client that checks answers through HTTP and rows through SQL. Import with
`from user_api_fixtures import *`."""
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
USER_API = os.environ.get("USER_API_BIN", os.path.join(REPO, os.environ.get("BIN_DIR", "bin"), "user-api"))

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")

__all__ = ["pg_template", "pg_db", "start_api", "api", "fresh_api", "own_pg_api", "api_before_pg"]


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
    """Calls fn until it returns something truthy (returned) or timeout seconds passed (fail)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except requests.RequestException as e:
            last = e
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def base_env(db=None, **extra):
    """Environment for bin/user-api: the settings of db (a harness database handle) or harmless
    defaults, NATS pointing at a port where nothing listens (the nudge is optional)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POSTGRES_", "USER_API_", "NATS_", "LOG_"))}
    env.update({"NATS_URL": f"nats://127.0.0.1:{harness.free_port()}", "LOG_LEVEL": "info"})
    if db is not None:
        env.update(db.env())
    env.update({k: str(v) for k, v in extra.items()})
    return env


class UserApi:
    """A running bin/user-api and the database behind it."""

    def __init__(self, proc, port, db):
        self.proc = proc
        self.port = port
        self.db = db
        self.base = f"http://127.0.0.1:{port}"

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
        with psycopg.connect(self.db.dsn(), autocommit=True, connect_timeout=10) as c:
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
        self.db.server.stop()

    def kill_postgres(self):
        self.db.server.kill()

    def start_postgres(self):
        self.db.server.start()
