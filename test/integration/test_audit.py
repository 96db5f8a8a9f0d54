"""bin/audit against real servers: PostgreSQL's users compared with the consumer's copy in
FerretDB. A converged pipeline shows no drift (exit 0); documents changed behind the consumer's
back are found with the right kind (exit 1); --repair heals what an event can heal through the
outbox, the relay and the consumer, and leaves what it cannot (a copy ahead of PostgreSQL) to the
operator, saying so; a difference that an event on its way removes is not drift; --every serves
the results as metrics; bad settings exit 2, an unreachable store 3, an interrupted pass 4, and no
password reaches any output."""
import os
import pty
import re
import select
import signal
import subprocess
import time
import uuid

import pytest
import requests

import harness
from test_consumer_e2e import Stack
from test_consumer_support import poll

MONGO_SECRET = "Mongo-S3cret-7d1f"
PG_SECRET = "Pg-S3cret-88aa"


@pytest.fixture
def stack(db, nats, ferret, services):
    return Stack(db, nats, ferret, services)


def audit_env(db, ferret, dbname, **extra):
    """audit's settings, as its own PostgreSQL role (some tests start it with subprocess)."""
    env = dict(db.env_for("audit"), MONGODB_URI=ferret.uri, MONGODB_DB=dbname, AUDIT_RECHECK_AFTER="0",
               LOG_LEVEL="info")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_audit(stack, *args, **extra):
    return harness.run_binary("audit", *args, env=audit_env(stack.db, stack.ferret, stack.dbname,
                                                            **extra), timeout=120)


def findings(r):
    """{user id: (kind, {field: value})} of audit's stdout, one line per drifted user."""
    out = {}
    for line in r.stdout.splitlines():
        kind, *fields = line.split()
        kv = dict(f.split("=", 1) for f in fields)
        uid = int(kv.pop("user"))
        assert uid not in out, f"user {uid} reported twice: {r.stdout}"
        out[uid] = (kind, kv)
    return out


def kinds(r):
    return {uid: kind for uid, (kind, _) in findings(r).items()}


def coll(stack):
    client = stack.ferret.client()
    return client, client[stack.dbname].user_notifications


def make_users(stack, n):
    users = []
    for i in range(n):
        r = stack.call("POST", "/users", json={"name": f"Audit User {i}",
                                               "email": f"audit{i}-{uuid.uuid4().hex[:8]}@example.com"})
        assert r.status_code == 201, r.text
        users.append(r.json())
    return users


def update(stack, u, name):
    r = stack.call("PUT", f"/users/{u['id']}", json={"name": name, "email": u["email"]})
    assert r.status_code == 200, r.text
    return r.json()


def delete(stack, u):
    r = stack.call("DELETE", f"/users/{u['id']}")
    assert r.status_code in (200, 204), r.text


def outbox_rows(stack, uid):
    return stack.db.sql("SELECT event_type, version, payload FROM outbox WHERE aggregate_id = %s "
                        "ORDER BY id", uid)


def converged(stack):
    """Waits until the copy equals PostgreSQL and every deleted user is a tombstone, and then for
    the consumer's read-back of its last writes (CONSUMER_RECHECK_AFTER, 1 s): it writes again
    what another writer took back, and would undo a change made behind its back before then."""
    stack.assert_converged()
    poll(lambda: stack.db.sql("SELECT count(*) FROM outbox_pending")[0][0] == 0, 30,
         "the outbox to drain")
    time.sleep(2)


def test_drift_is_found_by_kind_and_repaired_through_the_outbox(stack):
    users = make_users(stack, 10)
    for u in users[:6]:
        update(stack, u, u["name"] + " (updated)")
    a, b, c, d, e, f, g, h, deleted1, deleted2 = [u["id"] for u in users]
    delete(stack, users[8])
    delete(stack, users[9])
    converged(stack)

    # Pages of 3 on each side: the comparison crosses page boundaries on both.
    r = run_audit(stack, AUDIT_PAGE_SIZE=3)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "10 users compared (8 in PostgreSQL, 10 in the copy of which 2 tombstones)" in r.stderr
    assert "no drift" in r.stderr.splitlines()[-1]

    # Behind the consumer's back.
    client, docs = coll(stack)
    with client:
        versions = {x["_id"]: x["version"] for x in docs.find({}, {"version": 1})}
        docs.delete_one({"_id": a})                                            # missing
        docs.delete_one({"_id": b})                                            # missing
        docs.update_one({"_id": c}, {"$set": {"version": versions[c] - 1}})    # behind
        docs.update_one({"_id": d}, {"$set": {"version": versions[d] + 5}})    # ahead
        docs.update_one({"_id": deleted1}, {"$set": {"deleted": False}})       # resurrected
        docs.update_one({"_id": e}, {"$set": {"deleted": True}})               # a tombstone at its version
        docs.update_one({"_id": f}, {"$set": {"deleted": True,                 # an older tombstone
                                              "version": versions[f] - 1}})
    expected = {a: "missing", b: "missing", c: "behind", d: "ahead",
                deleted1: "deleted_in_postgres", e: "deleted_in_copy", f: "deleted_in_copy"}

    for page in (2, 1000):
        r = run_audit(stack, AUDIT_PAGE_SIZE=page)
        assert r.returncode == 1, r.stderr
        assert kinds(r) == expected, r.stdout
    found = findings(r)
    assert found[a][1] == {"postgres": str(versions[a]), "copy": "-"}
    assert found[c][1] == {"postgres": str(versions[c]), "copy": str(versions[c] - 1)}
    assert found[d][1] == {"postgres": str(versions[d]), "copy": str(versions[d] + 5)}
    assert found[deleted1][1] == {"postgres": "-", "copy": str(versions[deleted1])}
    assert found[e][1] == {"postgres": str(versions[e]), "copy": f"{versions[e]},deleted"}
    # The impossible kinds are also error lines on stderr, saying what happened and what to do.
    errors = [ln for ln in r.stderr.splitlines() if " error audit " in ln]
    assert any(f"user {d}: the copy is AHEAD of PostgreSQL" in ln for ln in errors), r.stderr
    assert any(f"user {e}: the copy holds a tombstone" in ln for ln in errors), r.stderr
    summary = r.stderr.splitlines()[-1]
    assert ("7 differ (missing 2, behind 1, ahead 1, deleted_in_postgres 1, deleted_in_copy 2, "
            "personal_data 0)"
            in summary), summary
    # Without --repair nothing is written.
    assert stack.db.sql("SELECT count(*) FROM outbox WHERE event_type = 'user_snapshot'")[0][0] == 0

    ahead_rows = outbox_rows(stack, d)
    r = run_audit(stack, "--repair", AUDIT_PAGE_SIZE=3)
    assert r.returncode == 1, r.stderr
    repaired = {uid: kv["repair"] for uid, (_, kv) in findings(r).items()}
    assert repaired == {a: "user_snapshot", b: "user_snapshot", c: "user_snapshot", f: "user_snapshot",
                        deleted1: "user_deleted", d: "none", e: "none"}, r.stdout
    assert ("repair: 5 events written (4 user_snapshot, 1 user_deleted), 0 already waiting in the "
            "outbox, 0 changed meanwhile, 2 not repairable by an event") in r.stderr.splitlines()[-1]
    # The events are the contract's: a snapshot of the row as it is; a deletion one version above
    # the copy's, without personal data.
    snap = [row for row in outbox_rows(stack, a) if row[0] == "user_snapshot"]
    assert len(snap) == 1 and snap[0][1] == versions[a] == 2
    assert snap[0][2]["name"] == users[0]["name"] + " (updated)" and snap[0][2]["deleted"] is False
    dele = [row for row in outbox_rows(stack, deleted1) if row[0] == "user_deleted"]
    assert [row[1] for row in dele] == [versions[deleted1], versions[deleted1] + 1]
    assert dele[-1][2]["deleted"] is True and "name" not in dele[-1][2] and "email" not in dele[-1][2]
    # Nothing is written for a user no event can repair.
    assert outbox_rows(stack, d) == ahead_rows

    # The relay and the consumer carry them: only what no event can repair is left.
    def only_unrepairable():
        r = run_audit(stack)
        return r if kinds(r) == {d: "ahead", e: "deleted_in_copy"} else None
    r = poll(only_unrepairable, 60, "the repair events to take effect")
    assert r.returncode == 1
    pg = {row[0]: row for row in stack.db.sql("SELECT id, name, email, version FROM users")}
    client, docs = coll(stack)
    with client:
        for uid in (a, b, c, f):
            doc = docs.find_one({"_id": uid})
            assert (doc["name"], doc["email"], doc["version"], doc["deleted"]) == \
                (pg[uid][1], pg[uid][2], pg[uid][3], False), doc
        tomb = docs.find_one({"_id": deleted1})
        assert tomb["deleted"] is True and tomb["version"] == versions[deleted1] + 1
        # Reads agree: the resurrected user is gone again, the others are back.
        assert stack.consumer.get(f"/notifications/user/{deleted1}").status_code == 404
        assert stack.consumer.get(f"/notifications/user/{a}").json()["version"] == pg[a][3]
        # The copy is still ahead for d, and audit says so on every pass, writing nothing.
        assert docs.find_one({"_id": d})["version"] == versions[d] + 5
        assert outbox_rows(stack, d) == ahead_rows

        # The operator decides PostgreSQL is right: without the documents, they are missing, and
        # --repair refills them.
        docs.delete_one({"_id": d})
        docs.delete_one({"_id": e})
    r = run_audit(stack, "--repair")
    assert r.returncode == 1 and kinds(r) == {d: "missing", e: "missing"}, r.stdout
    r = poll(lambda: (x := run_audit(stack)).returncode == 0 and x, 60, "audit to find no drift")
    assert r.stdout == "" and "no drift" in r.stderr
    stack.assert_converged()


def test_a_tombstone_that_kept_personal_data_is_found_and_erased_by_repair(stack):
    """A tombstone written before deletions removed name and email (planted here) is drift of
    its own kind; --repair writes a deletion after it, which the consumer applies: the tombstone
    and the user's history lose them. A tombstone without them is in order."""
    users = make_users(stack, 3)
    old, clean, alive = users
    update(stack, old, "Old Tombstone")
    delete(stack, old)
    delete(stack, clean)
    converged(stack)
    r = run_audit(stack)
    assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)

    client, docs = coll(stack)
    with client:
        tomb = docs.find_one({"_id": old["id"]})
        assert tomb["deleted"] is True and "name" not in tomb and "email" not in tomb, tomb
        docs.update_one({"_id": old["id"]}, {"$set": {"name": "Old Tombstone", "email": old["email"]}})
        hist = client[stack.dbname].user_notification_events
        hist.update_many({"user_id": old["id"], "deleted": False},
                         {"$set": {"name": "Old Tombstone", "email": old["email"]}})
    r = run_audit(stack)
    assert r.returncode == 1 and kinds(r) == {old["id"]: "personal_data"}, (r.stdout, r.stderr)
    assert "personal_data 1)" in r.stderr.splitlines()[-1]
    assert old["email"] not in r.stdout + r.stderr

    r = run_audit(stack, "--repair")
    assert r.returncode == 1 and findings(r)[old["id"]][1]["repair"] == "user_deleted", r.stdout
    r = poll(lambda: (x := run_audit(stack)).returncode == 0 and x, 60, "the repair to take effect")
    client, docs = coll(stack)
    with client:
        tomb = docs.find_one({"_id": old["id"]})
        assert tomb["deleted"] is True and "name" not in tomb and "email" not in tomb, tomb
        for h in client[stack.dbname].user_notification_events.find({"user_id": old["id"]}):
            assert "name" not in h and "email" not in h, h
        assert docs.find_one({"_id": alive["id"]})["name"] == alive["name"]


def test_repair_writes_nothing_that_already_waits_in_the_outbox(stack):
    users = make_users(stack, 3)
    converged(stack)
    x, y = users[0]["id"], users[1]["id"]
    # The relay stops: what user-api commits waits in the outbox, and so does what audit writes.
    assert stack.relay.stop() == 0
    update(stack, users[0], "changed while the relay is away")
    client, docs = coll(stack)
    with client:
        docs.delete_one({"_id": y})

    r = run_audit(stack, "--repair")
    assert r.returncode == 1, r.stderr
    assert findings(r) == {x: ("behind", {"postgres": "2", "copy": "1", "repair": "waiting"}),
                           y: ("missing", {"postgres": "1", "copy": "-", "repair": "user_snapshot"})}
    # Again: the snapshot written a moment ago waits too, so nothing is written twice.
    r = run_audit(stack, "--repair")
    assert r.returncode == 1, r.stderr
    assert {uid: kv["repair"] for uid, (_, kv) in findings(r).items()} == {x: "waiting", y: "waiting"}
    assert [row[0] for row in outbox_rows(stack, x)] == ["user_created", "user_updated"]
    assert [row[0] for row in outbox_rows(stack, y)] == ["user_created", "user_snapshot"]

    stack.relay.start()
    r = poll(lambda: (z := run_audit(stack)).returncode == 0 and z, 60, "audit to find no drift")
    assert r.stdout == ""
    stack.assert_converged()


def test_a_difference_an_event_on_its_way_removes_is_not_drift(stack):
    users = make_users(stack, 2)
    converged(stack)
    uid = users[0]["id"]
    # The consumer is frozen: the update is committed and published, not applied.
    os.kill(stack.consumer.service.pid, signal.SIGSTOP)
    try:
        update(stack, users[0], "on its way")
        poll(lambda: stack.db.sql("SELECT count(*) FROM outbox_pending")[0][0] == 0, 15,
             "the relay to publish")
        env = harness.service_env(audit_env(stack.db, stack.ferret, stack.dbname,
                                            AUDIT_RECHECK_AFTER="8s", LOG_LEVEL="debug"))
        p = subprocess.Popen([str(harness.bin_dir() / "audit")], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            seen.append(line)
            if "looking at them again" in line or not line:
                break
        assert "users that differed: 1, looking at them again in" in seen[-1], seen
    finally:
        os.kill(stack.consumer.service.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=60)
    err = "".join(seen) + err
    assert p.returncode == 0, err
    assert out == ""
    assert "no drift; 1 more differed at first and caught up" in err.splitlines()[-1], err
    assert f"user {uid}: differed (behind), caught up at the second look" in err


def test_every_serves_metrics_and_repairs_each_pass(stack, services):
    users = make_users(stack, 3)
    converged(stack)
    port = harness.free_port()
    env = audit_env(stack.db, stack.ferret, stack.dbname, AUDIT_PORT=port,
                    AUDIT_RECHECK_AFTER="200ms")
    svc = services.start("audit", env, args=["--every", "1s"], port=port)

    def metrics():
        r = requests.get(svc.url + "/metrics", timeout=5)
        assert r.status_code == 200
        return {m.group(1): float(m.group(2))
                for m in re.finditer(r"^(audit_[^ ]+) (\S+)$", r.text, re.M)}

    m = poll(lambda: (x := metrics()).get('audit_runs_total{result="clean"}', 0) >= 1 and x, 30,
             "a clean pass")
    for kind in ("missing", "behind", "ahead", "deleted_in_postgres", "deleted_in_copy"):
        assert m[f'audit_drift_users{{kind="{kind}"}}'] == 0
    assert abs(m["audit_last_run_timestamp_seconds"] - time.time()) < 30
    assert m["audit_users_compared"] == 3
    r = requests.get(svc.url + "/readyz", timeout=5)
    assert r.status_code == 200 and r.json()["checks"]["last_run"] == "clean"
    assert requests.get(svc.url + "/healthz", timeout=5).status_code == 200
    assert f"listening on 127.0.0.1:{port}" in svc.log_text()   # loopback unless told otherwise

    client, docs = coll(stack)
    with client:
        docs.delete_one({"_id": users[1]["id"]})
    m = poll(lambda: (x := metrics()).get('audit_drift_users{kind="missing"}') == 1 and x, 30,
             "the drift gauge")
    assert m['audit_runs_total{result="drift"}'] >= 1
    assert m['audit_repair_events_total{type="user_snapshot"}'] == 0
    assert f"drift: missing user={users[1]['id']} postgres=1 copy=-" in svc.log_text()
    assert svc.stop() == 0

    # The same with --repair: each pass writes what it found, and the next one finds it healed.
    svc = services.start("audit", env, args=["--every", "1s", "--repair"], port=port)
    # At least one: a pass that comes while the event is published but not yet applied writes
    # another (the consumer finds it stale).
    poll(lambda: metrics().get('audit_repair_events_total{type="user_snapshot"}', 0) >= 1, 30,
         "the repair event")
    poll(lambda: metrics().get('audit_drift_users{kind="missing"}') == 0, 30,
         "the repair to take effect")
    assert f"drift: missing user={users[1]['id']} postgres=1 copy=- repair=user_snapshot" in svc.log_text()
    stack.assert_converged()
    assert svc.stop() == 0


def test_every_reports_a_store_it_cannot_reach_and_keeps_going(db, services):
    port = harness.free_port()
    env = dict(db.env, MONGODB_URI=f"mongodb://auditor:{MONGO_SECRET}@127.0.0.1:{harness.free_port()}/",
               MONGODB_TIMEOUT="300ms", AUDIT_PORT=str(port))
    svc = services.start("audit", env, args=["--every", "1s"], port=port)

    def failed():
        r = requests.get(svc.url + "/readyz", timeout=5)
        return r.status_code == 503 and r.json()["checks"]["last_run"] == "failed" and r.json()
    ready = poll(failed, 30, "readyz to report the failed pass")
    assert "could not reach MongoDB" in ready["checks"]["problem"]
    poll(lambda: 'audit_runs_total{result="failed"} 2' in requests.get(svc.url + "/metrics",
                                                                       timeout=5).text,
         30, "a second failed pass")
    assert svc.running()
    assert svc.stop() == 0
    text = svc.log_text()
    assert "could not reach MongoDB" in text and "next pass in" in text
    assert MONGO_SECRET not in text and MONGO_SECRET not in str(ready)


@pytest.mark.parametrize("args,env,what", [
    (["--every", "5 minutes"], {}, "--every"),
    (["--every"], {}, "--every"),
    (["--repiar"], {}, "--repiar"),
    (["now"], {}, '"now"'),
    ([], {"AUDIT_PAGE_SIZE": "0"}, "AUDIT_PAGE_SIZE"),
    ([], {"AUDIT_RECHECK_AFTER": "soon"}, "AUDIT_RECHECK_AFTER"),
    ([], {"POSTGRES_PORT": "5432x"}, "POSTGRES_PORT"),
    ([], {"MONGODB_URI": f"mongo://auditor:{MONGO_SECRET}@127.0.0.1/"}, "MONGODB_URI"),
    ([], {"MONGODB_URI": f"mongodb://auditor:{MONGO_SECRET}@"}, "MONGODB_URI"),
    (["--check"], {"MONGODB_TIMEOUT": "1"}, "MONGODB_TIMEOUT"),
])
def test_bad_usage_or_settings_exit_2_with_a_clear_message(args, env, what):
    r = harness.run_binary("audit", *args, env=dict(env, POSTGRES_PASSWORD=PG_SECRET))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert what in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert MONGO_SECRET not in r.stdout + r.stderr and PG_SECRET not in r.stdout + r.stderr


def test_help_and_check_say_what_they_should_and_no_secret():
    r = harness.run_binary("audit", "--help")
    assert r.returncode == 0
    for text in ("--repair", "--every", "Exit status: 0 no drift; 1 drift found", "3 PostgreSQL",
                 "MONGODB_URI", "MONGODB_DB", "POSTGRES_HOST", "AUDIT_PAGE_SIZE", "AUDIT_PORT"):
        assert text in r.stdout, text
    r = harness.run_binary("audit", "--version")
    assert r.returncode == 0 and r.stdout.startswith("audit ")
    r = harness.run_binary("audit", "--check", env={
        "MONGODB_URI": f"mongodb://auditor:{MONGO_SECRET}@127.0.0.1:27017/?authSource=admin",
        "POSTGRES_PASSWORD": PG_SECRET})
    assert r.returncode == 0, r.stderr
    values = dict(ln.split("=", 1) for ln in r.stdout.splitlines())
    assert values["MONGODB_URI"] == "mongodb://auditor:********@127.0.0.1:27017/?authSource=admin"
    assert values["POSTGRES_PASSWORD"] == "********"
    assert values["MONGODB_DB"] == "notifications_db"
    assert values["MONGODB_COLLECTION"] == "user_notifications"
    assert values["AUDIT_BIND"] == "127.0.0.1"
    assert MONGO_SECRET not in r.stdout + r.stderr and PG_SECRET not in r.stdout + r.stderr


def test_an_unreachable_store_exits_3_without_a_secret(db, ferret):
    dead = harness.free_port()
    # MongoDB is not there; debug shows the driver's own lines too.
    env = dict(db.env, MONGODB_URI=f"mongodb://auditor:{MONGO_SECRET}@127.0.0.1:{dead}/",
               MONGODB_TIMEOUT="500ms", LOG_LEVEL="debug", POSTGRES_PASSWORD=db.PASSWORD)
    t0 = time.monotonic()
    r = harness.run_binary("audit", "--repair", env=env)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert time.monotonic() - t0 < 10
    assert r.stdout == ""
    assert f"could not reach MongoDB at mongodb://auditor:********@127.0.0.1:{dead}/" in r.stderr
    assert MONGO_SECRET not in r.stderr

    # PostgreSQL refuses the password; then it is not there at all.
    env = dict(db.env, MONGODB_URI=ferret.uri, POSTGRES_PASSWORD=PG_SECRET, LOG_LEVEL="debug")
    r = harness.run_binary("audit", env=env)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "could not connect to PostgreSQL" in r.stderr and "password authentication failed" in r.stderr
    assert PG_SECRET not in r.stdout + r.stderr
    env.update(POSTGRES_PORT=str(dead), POSTGRES_CONNECT_TIMEOUT="1s")
    r = harness.run_binary("audit", env=env)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert f"could not connect to PostgreSQL at 127.0.0.1:{dead}" in r.stderr
    assert PG_SECRET not in r.stdout + r.stderr

    # The users table is not there (a database never migrated): a store that cannot be read.
    env = dict(db.env, MONGODB_URI=ferret.uri, POSTGRES_DB="postgres")
    r = harness.run_binary("audit", env=env)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "could not read users from PostgreSQL" in r.stderr


def seed(db, ferret, dbname, n, orphans=()):
    """n users straight into PostgreSQL and their documents into the copy, plus documents of users
    PostgreSQL does not have (orphans): no services needed."""
    for i in range(n):
        db.sql("INSERT INTO users (name, email) VALUES (%s, %s)", f"u{i}", f"u{i}@example.com")
    ids = [row[0] for row in db.sql("SELECT id FROM users ORDER BY id")]
    with ferret.client() as client:
        docs = client[dbname].user_notifications
        docs.insert_many([{"_id": i, "user_id": i, "version": 1, "deleted": False} for i in ids])
        for o in orphans:
            docs.insert_one({"_id": o, "user_id": o, "version": 3, "deleted": False})
    return ids


def test_progress_on_a_terminal_and_in_lines_otherwise(db, ferret):
    dbname = f"audit_{uuid.uuid4().hex[:8]}"
    seed(db, ferret, dbname, 30)
    env = audit_env(db, ferret, dbname, AUDIT_PAGE_SIZE=1)
    # Not a terminal: progress lines on the log.
    r = harness.run_binary("audit", env=env)
    assert r.returncode == 0, r.stderr
    assert re.search(r" info audit audit: \d+%, user id \d+ of 30, \d+ compared, 0 differ", r.stderr)
    # A terminal: one line redrawn in place, erased before the summary.
    master, slave = pty.openpty()
    p = subprocess.Popen([str(harness.bin_dir() / "audit")], env=harness.service_env(env),
                         stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(master, 4096)
        except OSError:   # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(30) == 0
    tty = b"".join(chunks).decode()
    assert re.search(r"\raudit: +\d+% user id \d+ of 30, \d+ compared, 0 differ\x1b\[K", tty), tty
    assert "\r\x1b[K" in tty and "no drift" in tty
    assert " info audit audit: " not in tty   # no progress lines on a terminal


def test_an_interrupted_pass_exits_4(db, ferret):
    dbname = f"audit_{uuid.uuid4().hex[:8]}"
    seed(db, ferret, dbname, 3, orphans=[10_000])
    env = harness.service_env(audit_env(db, ferret, dbname, AUDIT_RECHECK_AFTER="60s",
                                        LOG_LEVEL="debug"))
    p = subprocess.Popen([str(harness.bin_dir() / "audit")], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    seen = []
    while True:
        line = p.stderr.readline()
        seen.append(line)
        if "looking at them again" in line or not line:
            break
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 4, "".join(seen) + err
    assert out == ""   # nothing was confirmed before the end
    assert "audit interrupted: 4 users compared" in err and "so far no drift" in err
