"""user-api under injected failures (FAILPOINTS): a crash after commit loses nothing and a retry
with the Idempotency-Key gets the first answer; SIGTERM lets a request in flight finish."""
import signal
import threading
import uuid

import pytest
import requests

from user_api_fixtures import *  # noqa: F401,F403  (fixtures: pg_db, start_api)
from user_api_fixtures import poll, unique_email


def test_crash_after_commit_keeps_row_and_event_together(start_api):
    api = start_api(FAILPOINTS="api.after_commit_before_response=crash")
    email = unique_email()
    before = api.counts()
    with pytest.raises(requests.ConnectionError):
        api.post("/users", json={"name": "Crash", "email": email})
    assert api.proc.wait(10) == -signal.SIGKILL
    rows = api.sql("SELECT id FROM users WHERE email = %s", (email,))
    assert len(rows) == 1, rows
    assert [e["event_type"] for e in api.outbox_for(rows[0][0])] == ["user_created"]
    assert api.counts() == (before[0] + 1, before[1] + 1)


def test_retry_after_crash_with_idempotency_key_gets_the_first_answer(start_api):
    """The client never saw the answer; its retry with the same key, on the restarted API, gets
    201 with the user that was committed, and nothing is written twice."""
    key = "crash-" + uuid.uuid4().hex
    body = {"name": "Crash Retry", "email": unique_email()}
    api = start_api(FAILPOINTS="api.after_commit_before_response=crash")
    with pytest.raises(requests.ConnectionError):
        api.post("/users", json=body, headers={"Idempotency-Key": key})
    api.proc.wait(10)
    after_crash = api.counts()

    api2 = start_api()
    r = api2.post("/users", json=body, headers={"Idempotency-Key": key})
    assert r.status_code == 201, r.text
    [(uid,)] = api2.sql("SELECT id FROM users WHERE email = %s", (body["email"],))
    assert r.json()["id"] == uid
    assert r.headers.get("Location") == f"/users/{uid}"
    assert api2.counts() == after_crash


def test_sigterm_lets_the_request_in_flight_finish(start_api):
    api = start_api(FAILPOINTS="api.after_commit_before_response=pause(1500)")
    result = {}

    def call():
        try:
            result["r"] = api.post("/users", json={"name": "In flight", "email": unique_email()}, timeout=20)
        except requests.RequestException as e:
            result["e"] = e

    t = threading.Thread(target=call)
    t.start()
    # Wait until the request is inside the handler (committed, paused before the answer).
    poll(lambda: api.sql_one("SELECT count(*) FROM users WHERE name = 'In flight'")[0] == 1 or None,
         timeout=10, what="the request to commit")
    api.proc.send_signal(signal.SIGTERM)
    t.join(20)
    assert "e" not in result, result.get("e")
    assert result["r"].status_code == 201, result["r"].text
    assert api.proc.wait(15) == 0

