"""user-api when PostgreSQL goes away and comes back: 503 with Retry-After promptly, never a hang
or a 500, and service resumes without restarting the API."""
import threading
import time

import requests

from user_api_fixtures import *  # noqa: F401,F403  (fixtures: own_pg_api, api_before_pg)
from user_api_fixtures import assert_problem, poll, unique_email

# A request must be answered well within this; the contract says "within a second or two". It is
# a guard against a hang, not a timing assertion.
ANSWER_TIMEOUT = 8


def assert_unavailable(r):
    body = assert_problem(r, 503)
    ra = r.headers.get("Retry-After")
    assert ra is not None and ra.strip().isdigit(), r.headers
    return body


def test_postgres_stopped_then_restarted(own_pg_api):
    api = own_pg_api
    u = api.create()

    stop_flag = threading.Event()
    seen = []            # (kind, status) of the background traffic
    created_ok = []      # ids of 201 answers
    errors = []

    def traffic():
        i = 0
        while not stop_flag.is_set():
            i += 1
            try:
                if i % 2:
                    r = api.post("/users", json={"name": f"bg {i}", "email": unique_email()},
                                 timeout=ANSWER_TIMEOUT)
                    if r.status_code == 201:
                        created_ok.append(r.json()["id"])
                    seen.append(("POST", r.status_code))
                else:
                    r = api.get(f"/users/{u['id']}", timeout=ANSWER_TIMEOUT)
                    seen.append(("GET", r.status_code))
            except requests.RequestException as e:   # a hang shows up as a timeout here
                errors.append(repr(e))
            time.sleep(0.02)

    bg = threading.Thread(target=traffic)
    bg.start()
    try:
        time.sleep(0.3)
        api.stop_postgres()

        # While PostgreSQL is down every kind of request that needs it answers 503 + Retry-After.
        def down_answers():
            r = api.get(f"/users/{u['id']}", timeout=ANSWER_TIMEOUT)
            return r if r.status_code == 503 else None
        assert_unavailable(poll(down_answers, timeout=10, what="GET /users/{id} to answer 503"))
        assert_unavailable(api.get("/users", timeout=ANSWER_TIMEOUT))
        assert_unavailable(api.post("/users", json={"name": "Down", "email": unique_email()},
                                    timeout=ANSWER_TIMEOUT))
        assert_unavailable(api.put(f"/users/{u['id']}", json={"name": "Down", "email": u["email"]},
                                   timeout=ANSWER_TIMEOUT))
        assert_unavailable(api.delete(f"/users/{u['id']}", timeout=ANSWER_TIMEOUT))
        # Repeated requests do not pile up into a hang either.
        for _ in range(5):
            assert_unavailable(api.get(f"/users/{u['id']}", timeout=ANSWER_TIMEOUT))
        r = api.get("/readyz", timeout=ANSWER_TIMEOUT)
        assert r.status_code == 503, r.text
        assert r.headers.get("Retry-After"), r.headers
        # Liveness does not depend on PostgreSQL.
        assert api.get("/healthz", timeout=ANSWER_TIMEOUT).status_code == 200

        time.sleep(0.5)
        api.start_postgres()

        def back():
            r = api.get(f"/users/{u['id']}", timeout=ANSWER_TIMEOUT)
            return r if r.status_code == 200 else None
        r = poll(back, timeout=20, what="GET /users/{id} to answer 200 after PostgreSQL came back")
        assert r.json()["id"] == u["id"]
        assert poll(lambda: api.get("/readyz", timeout=ANSWER_TIMEOUT).status_code == 200 or None,
                    timeout=20, what="/readyz to answer 200")
        r = api.post("/users", json={"name": "After", "email": unique_email()}, timeout=ANSWER_TIMEOUT)
        assert r.status_code == 201, r.text
        created_ok.append(r.json()["id"])
        r = api.put(f"/users/{u['id']}", json={"name": "After", "email": u["email"]}, timeout=ANSWER_TIMEOUT)
        assert r.status_code == 200, r.text
    finally:
        stop_flag.set()
        bg.join(30)

    assert not errors, errors[:5]
    statuses = {s for _, s in seen}
    assert statuses <= {200, 201, 503}, seen
    assert 503 in statuses, seen
    # Every write answered 201 is in users together with its outbox row.
    for uid in created_ok:
        assert api.sql_one("SELECT count(*) FROM users WHERE id = %s", (uid,)) == (1,), uid
        assert [e["event_type"] for e in api.outbox_for(uid)] == ["user_created"], uid
    # The user's events are in version order and match its version.
    events = api.outbox_for(u["id"])
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert api.get(f"/users/{u['id']}").json()["version"] == len(events)


def test_postgres_killed_then_restarted(own_pg_api):
    """kill -9 of PostgreSQL (no goodbye to the clients): the API's connections break mid-use."""
    api = own_pg_api
    u = api.create()
    api.kill_postgres()
    r = poll(lambda: (lambda r: r if r.status_code == 503 else None)(
        api.get(f"/users/{u['id']}", timeout=ANSWER_TIMEOUT)), timeout=10, what="503 after kill")
    assert_unavailable(r)
    assert_unavailable(api.post("/users", json={"name": "Down", "email": unique_email()}, timeout=ANSWER_TIMEOUT))
    api.start_postgres()
    poll(lambda: api.get(f"/users/{u['id']}", timeout=ANSWER_TIMEOUT).status_code == 200 or None,
         timeout=20, what="GET /users/{id} to answer 200 after restart")
    r = api.put(f"/users/{u['id']}", json={"name": "Back", "email": u["email"]}, timeout=ANSWER_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2


def test_api_started_before_postgres(api_before_pg):
    """A dependency that is down at start: the API runs, reports not ready, and serves once
    PostgreSQL is up, without a restart."""
    api = api_before_pg
    assert api.get("/healthz", timeout=ANSWER_TIMEOUT).status_code == 200
    r = api.get("/readyz", timeout=ANSWER_TIMEOUT)
    assert r.status_code == 503, r.text
    assert_unavailable(api.get("/users", timeout=ANSWER_TIMEOUT))
    api.start_postgres()
    poll(lambda: api.get("/readyz", timeout=ANSWER_TIMEOUT).status_code == 200 or None,
         timeout=20, what="/readyz to answer 200 once PostgreSQL is up")
    r = api.post("/users", json={"name": "Late", "email": unique_email()}, timeout=ANSWER_TIMEOUT)
    assert r.status_code == 201, r.text
    assert api.process_alive()
