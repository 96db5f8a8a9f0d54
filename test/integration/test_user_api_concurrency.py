"""user-api under concurrent writes: versions are handed out once each, and the outbox holds the
events of one user in version order."""
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from user_api_fixtures import *  # noqa: F401,F403  (fixtures: api)
from user_api_fixtures import unique_email

N = 50


def run_together(n, fn):
    """Runs fn(i) for i in 0..n-1 on n threads released at the same moment; returns the results."""
    barrier = threading.Barrier(n)

    def call(i):
        barrier.wait(30)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(call, range(n)))


def test_50_concurrent_updates_of_one_user(api):
    u = api.create()
    uid = u["id"]

    def put(i):
        return api.put(f"/users/{uid}", json={"name": f"writer {i}", "email": u["email"]}, timeout=60)

    responses = run_together(N, put)
    bad = [(r.status_code, r.text) for r in responses if r.status_code != 200]
    assert not bad, bad
    versions = sorted(r.json()["version"] for r in responses)
    assert versions == list(range(2, N + 2))
    for r in responses:
        assert r.headers["ETag"] == f'"{r.json()["version"]}"'

    final = api.get(f"/users/{uid}").json()
    assert final["version"] == N + 1
    events = api.outbox_for(uid)                 # ordered by outbox id
    assert len(events) == N + 1
    assert [e["version"] for e in events] == list(range(1, N + 2))
    assert [e["event_type"] for e in events] == ["user_created"] + ["user_updated"] * N
    # Each event carries the state its version produced: the name the answer with that version showed.
    by_version = {r.json()["version"]: r.json()["name"] for r in responses}
    for e in events[1:]:
        assert e["payload"]["name"] == by_version[e["version"]]
        assert e["payload"]["version"] == e["version"]
    assert events[-1]["payload"]["name"] == final["name"]


def test_concurrent_creates_with_one_email_give_one_user(api):
    email = unique_email()
    before = api.counts()
    responses = run_together(20, lambda i: api.post(
        "/users", json={"name": f"racer {i}", "email": email if i % 2 else email.upper()}, timeout=60))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19, [(r.status_code, r.text) for r in responses]
    assert api.counts() == (before[0] + 1, before[1] + 1)


def test_concurrent_if_match_updates_only_one_wins(api):
    u = api.create()
    before = api.counts()
    responses = run_together(10, lambda i: api.put(
        f"/users/{u['id']}", json={"name": f"cas {i}", "email": u["email"]},
        headers={"If-Match": '"1"'}, timeout=60))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 9, [(r.status_code, r.text) for r in responses]
    assert api.counts() == (before[0], before[1] + 1)
    assert api.get(f"/users/{u['id']}").json()["version"] == 2


def test_concurrent_deletes_of_one_user(api):
    u = api.create()
    responses = run_together(10, lambda i: api.delete(f"/users/{u['id']}", timeout=60))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [204] + [404] * 9, [(r.status_code, r.text) for r in responses]
    assert [e["event_type"] for e in api.outbox_for(u["id"])] == ["user_created", "user_deleted"]


def test_mixed_concurrent_traffic_keeps_every_2xx_with_its_event(api):
    """Creates, updates and reads from many threads: every 2xx write is in users with its outbox
    row, and every user's events are in version order."""
    seeds = [api.create() for _ in range(5)]
    created = []
    lock = threading.Lock()

    def work(i):
        if i % 3 == 0:
            r = api.post("/users", json={"name": f"mixed {i}", "email": unique_email()}, timeout=60)
            if r.status_code == 201:
                with lock:
                    created.append(r.json()["id"])
            return r.status_code
        if i % 3 == 1:
            s = seeds[i % 5]
            return api.put(f"/users/{s['id']}", json={"name": f"m{i}", "email": s["email"]}, timeout=60).status_code
        return api.get("/users?limit=10", timeout=60).status_code

    statuses = run_together(45, work)
    assert set(statuses) <= {200, 201}, statuses
    for uid in created:
        assert [e["event_type"] for e in api.outbox_for(uid)] == ["user_created"]
    for s in seeds:
        events = api.outbox_for(s["id"])
        assert [e["version"] for e in events] == list(range(1, len(events) + 1))
        assert api.get(f"/users/{s['id']}").json()["version"] == len(events)


def pipeline_counts(a):
    """user-api's pg_pipeline_* counters: transactions, statements sent grouped, alone, again."""
    out = {"transactions": 0.0, "grouped": 0.0, "alone": 0.0, "again": 0.0}
    for line in a.get("/metrics").text.splitlines():
        if line.startswith("pg_pipeline_transactions_total "):
            out["transactions"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("pg_pipeline_statements_total{"):
            out[line.split('sent="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_failing_statement_does_not_fail_the_others_of_its_group(start_api):
    """README (group commit): the statements of one round of the loop on one connection share a
    transaction; when one fails (here a taken email, 409), none of them committed, and the others
    are sent again alone: every other request is answered as if it had been alone. With one
    connection and a burst released together, groups form; the counters show that some statements
    were sent again, so the path ran."""
    # Bursts of new connections, each closed after its answer: more at once than the 64 a
    # second burst may find still counted from the first.
    a = start_api(USER_API_PG_CONNECTIONS="1", USER_API_MAX_CONNECTIONS_PER_IP="1024")
    taken = a.create(name="First owner")
    bursts = 0
    while True:
        bursts += 1
        before, counts = a.counts(), pipeline_counts(a)
        emails = [taken["email"] if i % 4 == 0 else unique_email() for i in range(40)]
        responses = run_together(40, lambda i: a.post(
            "/users", json={"name": f"grouped {i}", "email": emails[i]}, timeout=60))
        for i, r in enumerate(responses):
            if i % 4 == 0:
                assert r.status_code == 409, (i, r.status_code, r.text)
            else:
                assert r.status_code == 201, (i, r.status_code, r.text)
                assert r.json()["email"] == emails[i]
                assert [e["event_type"] for e in a.outbox_for(r.json()["id"])] == ["user_created"]
        assert a.counts() == (before[0] + 30, before[1] + 30)
        assert a.sql("SELECT id FROM users WHERE email = %s", (taken["email"],)) == [(taken["id"],)]
        after = pipeline_counts(a)
        tx, grouped = (after["transactions"] - counts["transactions"],
                       after["grouped"] - counts["grouped"])
        assert tx <= grouped + after["again"] - counts["again"]
        if after["again"] > counts["again"] or bursts == 5:
            break
    assert after["again"] > counts["again"], "no group with a failed statement in 5 bursts"


def test_updates_and_deletes_are_never_grouped(start_api):
    """README (group commit): updates and deletions lock an existing row, so they are sent alone:
    two groups of crossing updates would deadlock, and PostgreSQL would break it only after
    deadlock_timeout. Bursts of updates of a few users, in every order, at once: every statement
    goes alone, no transaction was rolled back for a deadlock, and every update is in the
    outbox."""
    a = start_api(USER_API_PG_CONNECTIONS="2", USER_API_MAX_CONNECTIONS_PER_IP="1024")
    users = [a.create(name=f"crossed {i}") for i in range(4)]
    deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    before, dl_before = pipeline_counts(a), a.sql_one(deadlocks)[0]
    for burst in range(3):
        responses = run_together(32, lambda i: a.put(
            f"/users/{users[(i + burst) % 4]['id']}",
            json={"name": f"crossed {i}", "email": users[(i + burst) % 4]["email"]}, timeout=60))
        assert [r.status_code for r in responses] == [200] * 32, [r.text for r in responses]
    gone = run_together(4, lambda i: a.delete(f"/users/{users[i]['id']}", timeout=60))
    assert [r.status_code for r in gone] == [204] * 4
    after = pipeline_counts(a)
    assert after["alone"] - before["alone"] == 3 * 32 + 4
    assert after["grouped"] == before["grouped"]
    assert a.sql_one(deadlocks)[0] == dl_before
    for u in users:
        assert [e["event_type"] for e in a.outbox_for(u["id"])] == \
            ["user_created"] + ["user_updated"] * 24 + ["user_deleted"]


def test_a_group_holds_at_most_8_statements(start_api):
    """README (group commit): at most 8 statements share a transaction. 96 creations reach the
    loop at once (their connections opened first, then each request written in one go), so a
    round gathers more than 8 on the one connection: the counters show groups, none above 8."""
    a = start_api(USER_API_PG_CONNECTIONS="1", USER_API_MAX_CONNECTIONS_PER_IP="1024")
    a.create()                                  # the connection is open
    before = pipeline_counts(a)
    socks = [socket.create_connection(("127.0.0.1", a.port), timeout=30) for _ in range(96)]
    try:
        for i, sk in enumerate(socks):
            body = json.dumps({"name": f"round {i}", "email": unique_email()}).encode()
            sk.sendall(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        for sk in socks:
            head = b""
            while b"\r\n" not in head:
                chunk = sk.recv(4096)
                assert chunk, "closed without an answer"
                head += chunk
            assert head.startswith(b"HTTP/1.1 201 "), head[:200]
    finally:
        for sk in socks:
            sk.close()
    after = pipeline_counts(a)
    tx, grouped = after["transactions"] - before["transactions"], after["grouped"] - before["grouped"]
    assert grouped == 96 and tx < 96, (grouped, tx)     # groups formed
    assert tx >= 96 / 8, (grouped, tx)                  # none held more than 8
