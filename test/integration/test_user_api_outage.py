"""user-api when PostgreSQL goes away and comes back: 503 with Retry-After promptly, never a hang
or a 500, and service resumes without restarting the API."""
import threading
import time

import requests

from user_api_fixtures import *  # noqa: F401,F403  (fixtures: own_pg_api, api_before_pg, start_api)
from user_api_fixtures import assert_problem, poll, unique_email

# A request must be answered well within this; the contract says "within a second or two". It is
# a guard against a hang, not a timing assertion.
ANSWER_TIMEOUT = 8


def assert_unavailable(r):
    body = assert_problem(r, 503)
    ra = r.headers.get("Retry-After")
    assert ra is not None and ra.strip().isdigit(), r.headers
    return body


def assert_all_requests_succeed(api, u, n=40):
    """Once the API answered one request after PostgreSQL came back, every later request succeeds:
    no worker thread may still hold a connection to the old server and fail on it. n sequential
    requests (new TCP connection each) reach every worker of the default pool of 8. Returns the
    ids of the users created."""
    created, failures = [], []
    for i in range(n):
        kind = ("POST", "PUT", "GET")[i % 3]
        if kind == "POST":
            r = api.post("/users", json={"name": f"after {i}", "email": unique_email()}, timeout=ANSWER_TIMEOUT)
            if r.status_code == 201:
                created.append(r.json()["id"])
        elif kind == "PUT":
            r = api.put(f"/users/{u['id']}", json={"name": f"after {i}", "email": u["email"]},
                        timeout=ANSWER_TIMEOUT)
        else:
            r = api.get(f"/users/{u['id']}", timeout=ANSWER_TIMEOUT)
        if r.status_code not in (200, 201):
            failures.append((i, kind, r.status_code, r.text[:200]))
    assert not failures, f"{len(failures)} of {n} requests failed after recovery: {failures[:4]}"
    return created


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
        assert "postgres" in r.text.lower(), f"/readyz should say what is not ready: {r.text}"
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
        stop_flag.set()
        bg.join(30)
        created_ok += assert_all_requests_succeed(api, u)
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
    assert_all_requests_succeed(api, u)


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


def test_requests_at_start_wait_for_the_first_connection(start_api):
    """README: connections are opened by a thread of their own. Requests that arrive before the
    first one is open wait for it (PostgreSQL is up): none is answered 503."""
    api = start_api()
    answers = []

    def post(i):
        r = api.post("/users", json={"name": f"early {i}", "email": unique_email()},
                     timeout=ANSWER_TIMEOUT)
        answers.append((r.status_code, r.text[:200]))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a for a in answers if a[0] != 201] == [], answers
