"""Least privilege in NATS (deploy/nats-server.conf): every service logs in as its own user and
can do only what its code does. An anonymous client, user-api's user and the relay's cannot forge
an event or touch the consumer's lease; each service works end to end as its own user without a
single permission violation; credentials come from a password file, an nkey seed or the URL, and a
wrong one stops the service with a clear error that does not show it; TLS to NATS with a CA and a
client certificate made by the test, and a client without the CA refused."""
import asyncio
import base64
import json
import subprocess
import time
import uuid

import nats as nats_py
import pytest
import requests

import harness
from test_consumer_support import make_event, poll

LEASE_STREAM = "CONSUMER_LEASES"
LEASE_SUBJECT = "consumer.lease.notification-consumer"


# --- helpers -------------------------------------------------------------------------------------

def run(coro):
    return asyncio.run(coro)


async def admin_js(server, fn):
    nc = await nats_py.connect(server.url, connect_timeout=3, allow_reconnect=False,
                               **server.client_options())
    try:
        return await fn(nc, nc.jetstream(timeout=5))
    finally:
        await nc.close()


def stream_messages(server, stream="USER_EVENTS") -> int:
    async def fn(nc, js):
        return (await js.stream_info(stream)).state.messages
    return run(admin_js(server, fn))


def lease_record(server):
    """(sequence, data) of the lease's last message, as the consumer wrote it."""
    async def fn(nc, js):
        m = await js.get_last_msg(LEASE_STREAM, LEASE_SUBJECT)
        return m.seq, m.data
    return run(admin_js(server, fn))


def insert_outbox_row(db) -> str:
    """One committed outbox row, as user-api writes it; returns its event id."""
    event_id = str(uuid.uuid4())
    payload = {"id": 1, "name": "Ada", "email": "ada@example.com", "version": 1,
               "updated_at": "2026-01-01T00:00:00.000000Z", "deleted": False}
    with db.connect() as c:
        c.execute("INSERT INTO outbox (event_id, aggregate_id, event_type, version, subject, "
                  "headers, payload) VALUES (%s, 1, 'user_created', 1, 'user.events.created', "
                  "'{}'::jsonb, %s::jsonb)", (event_id, json.dumps(payload)))
    return event_id


def relay_env(db, server_env, **extra):
    return {**db.env, **server_env, "OUTBOX_RELAY_PORT": harness.free_port(),
            "OUTBOX_RELAY_BIND": "127.0.0.1", "RELAY_POLL_MAX": "200ms", "LOG_LEVEL": "info",
            **extra}


def relay_exit_log(env):
    """Starts outbox-relay with env, which must make it stop at start with status 1; its log."""
    svc = harness.Service("outbox-relay", env)
    try:
        svc.start(wait=False)
        assert svc.wait_exit(15) == 1, svc.log_text()
        return svc.log_text()
    finally:
        svc.close()


def soon(fn):
    """fn, with any exception (a stream not created yet) meaning "not yet", for poll()."""
    def attempt():
        try:
            return fn()
        except Exception:  # noqa: BLE001
            return None
    return attempt


def violations(server) -> list[str]:
    """The permission violations nats-server logged ("Publish Violation", "Subscription
    Violation"), with the user each came from."""
    return [line for line in server.log_text().splitlines() if "Violation" in line]


class Attempt:
    """A nats-py client logged in as one user (or anonymous), that tries what it should not and
    keeps the errors the server sent back."""

    def __init__(self, server, user=None, password=None):
        self.server, self.user, self.password = server, user, password
        self.errors: list[str] = []

    async def connect(self):
        async def on_error(e):
            self.errors.append(str(e))
        kw = {"user": self.user, "password": self.password} if self.user else {}
        return await nats_py.connect(self.server.url, connect_timeout=3, allow_reconnect=False,
                                     max_reconnect_attempts=0, error_cb=on_error, **kw)

    def try_publishes(self, subjects) -> dict:
        """JetStream-publishes one message on each subject and asks the JetStream API to purge
        the lease stream; returns {what: the exception it raised, or "acked"}."""
        async def go():
            out = {}
            nc = await self.connect()
            try:
                js = nc.jetstream(timeout=2)
                for subject in subjects:
                    subject_, body, headers = make_event("user_created", 424242, 1)[:3]
                    try:
                        await js.publish(subject, body, headers=headers)
                        out[subject] = "acked"
                    except Exception as e:  # noqa: BLE001 - what it raised is the result
                        out[subject] = type(e).__name__
                    # A plain publish too, which asks for no answer.
                    await nc.publish(subject, body, headers=headers)
                try:
                    await nc.request(f"$JS.API.STREAM.PURGE.{LEASE_STREAM}", b"", timeout=2)
                    out["purge"] = "answered"
                except Exception as e:  # noqa: BLE001
                    out["purge"] = type(e).__name__
                await nc.flush()
                await asyncio.sleep(0.2)
            finally:
                await nc.close()
            return out
        return run(go())


# --- the stack -----------------------------------------------------------------------------------

class Stack:
    """relay, user-api and notification-consumer, each as its own NATS user (the harness gives
    each Service its binary's user), on the test's PostgreSQL, nats-server and FerretDB."""

    def __init__(self, db, nats, ferret, services):
        self.db, self.nats, self.ferret = db, nats, ferret
        self.dbname = f"notif_{uuid.uuid4().hex[:8]}"
        common = dict(db.env, NATS_URL=nats.url, LOG_LEVEL="info")
        self.relay = services.start("outbox-relay", dict(
            common, OUTBOX_RELAY_PORT=harness.free_port(), OUTBOX_RELAY_BIND="127.0.0.1",
            RELAY_POLL_MAX="200ms"))
        self.api = services.start("user-api", dict(
            common, USER_API_PORT=harness.free_port(), USER_API_BIND="127.0.0.1"))
        self.consumer_env = {
            "NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "MONGODB_DB": self.dbname,
            "NOTIFICATION_CONSUMER_PORT": harness.free_port(),
            "NOTIFICATION_CONSUMER_BIND": "127.0.0.1", "LOG_LEVEL": "info",
            "CONSUMER_LAG_INTERVAL": "200ms"}
        self.consumer = services.start("notification-consumer", self.consumer_env)
        poll(lambda: requests.get(self.consumer.url + "/readyz", timeout=2).status_code == 200,
             30, "the consumer ready")
        # The lease is written: the consumer applies.
        poll(soon(lambda: lease_record(nats)), 15, "the consumer's lease")

    def copy(self, uid):
        r = requests.get(f"{self.consumer.url}/notifications/user/{uid}", timeout=10)
        return r.json() if r.status_code == 200 else None


@pytest.fixture
def stack(db, nats, ferret, services):
    return Stack(db, nats, ferret, services)


# --- who may do what -----------------------------------------------------------------------------

def test_every_service_works_as_its_own_user_without_a_permission_violation(stack):
    """Every path of the three services that talks to NATS, each as its own user: the nudge, the
    stream's creation and the relay's watch, the durable consumer, its lag, the lease, a poison
    event dead-lettered, and replay (its ephemeral consumer and its writer announcement). The
    server refuses nothing of it, and names every connection's user."""
    r = requests.post(stack.api.url + "/users", json={"name": "Ada", "email": "ada@example.com"},
                      timeout=10)
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    r = requests.put(f"{stack.api.url}/users/{uid}",
                     json={"name": "Ada L", "email": "ada@example.com"}, timeout=10)
    assert r.status_code == 200, r.text
    poll(lambda: (stack.copy(uid) or {}).get("version") == 2, 30, "the update in the copy")

    # A poison event (as admin, the only user that may publish one): dead-lettered.
    async def poison(nc, js):
        await js.publish("user.events.created", b"not json", headers={"Nats-Msg-Id": "poison-1"})
    run(admin_js(stack.nats, poison))
    poll(soon(lambda: stream_messages(stack.nats, "USER_EVENTS_DLQ") == 1), 30,
         "the poison event in USER_EVENTS_DLQ")

    r = harness.run_binary("notification-consumer", "replay", env=stack.consumer_env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # The consumer's lag gauges are read from JetStream too (CONSUMER_LAG_INTERVAL).
    time.sleep(0.5)

    assert violations(stack.nats) == []
    users = {c["name"]: c["authorized_user"]
             for c in stack.nats.varz("connz", auth="true")["connections"]}
    assert users == {"user-api": "user-api", "outbox-relay": "outbox-relay",
                     "notification-consumer": "notification-consumer"}, users
    for svc in (stack.relay, stack.api, stack.consumer):
        assert "Permissions Violation" not in svc.log_text(), svc.log_text()[-2000:]


def test_anonymous_client_is_refused(stack):
    """No user for anonymous clients: the connection itself is refused, so nothing it could
    publish reaches the stream or the lease."""
    before, lease = stream_messages(stack.nats), lease_record(stack.nats)
    with pytest.raises(nats_py.errors.Error, match="Authorization Violation"):
        run(Attempt(stack.nats).connect())
    assert stream_messages(stack.nats) == before
    assert lease_record(stack.nats) == lease


@pytest.mark.parametrize("user", ["user-api", "outbox-relay", "notification-consumer"])
def test_a_service_user_cannot_forge_what_is_not_its_own(stack, user):
    """user-api may publish only its nudge: no event and no lease. The relay publishes events
    but cannot touch the lease; the consumer cannot publish events. Each refused publish gets no
    PubAck (and the server says why); the stream and the lease are unchanged. Nobody but admin
    may purge the lease stream."""
    own = {"user-api": [], "outbox-relay": ["user.events.created"],
           "notification-consumer": [LEASE_SUBJECT]}[user]
    forbidden = [s for s in ("user.events.created", LEASE_SUBJECT) if s not in own]
    before, lease = stream_messages(stack.nats), lease_record(stack.nats)
    a = Attempt(stack.nats, user, harness.nats_secret(user)[0])
    out = a.try_publishes(forbidden)
    for subject in forbidden:
        assert out[subject] == "TimeoutError", out
        assert any(f'permissions violation for publish to "{subject}"' in e.lower()
                   for e in a.errors), a.errors
    assert out["purge"] == "TimeoutError", out
    assert stream_messages(stack.nats) == before
    # The consumer renews its lease meanwhile: only the owner may have written it since.
    seq, data = lease_record(stack.nats)
    assert seq >= lease[0] and json.loads(data)["owner"] == json.loads(lease[1])["owner"]
    for subject in forbidden:
        assert any(f'"$G/user:{user}" - Publish Violation - Subject "{subject}"' in v
                   for v in violations(stack.nats)), violations(stack.nats)


# --- credentials ---------------------------------------------------------------------------------

def test_a_wrong_password_stops_the_service_with_a_clear_error_that_hides_it(nats, tmp_path, db):
    """From a file or from NATS_PASSWORD: the service exits 1 at start, its log names the server,
    the user and the refusal, and neither the log nor --check shows the password."""
    secret = "Wr0ngPasswordMarker" + uuid.uuid4().hex
    pw_file = tmp_path / "relay.password"
    pw_file.write_text(secret + "\n")
    for creds in ({"NATS_USER": "outbox-relay", "NATS_PASSWORD_FILE": str(pw_file)},
                  {"NATS_USER": "outbox-relay", "NATS_PASSWORD": secret}):
        env = relay_env(db, {"NATS_URL": nats.url}, **creds)
        log = relay_exit_log(env)
        assert (f'could not connect to NATS at "{nats.url}" as "outbox-relay": '
                f'Authorization Violation') in log, log
        assert secret not in log
        check = harness.run_binary("outbox-relay", "--check", env=env)
        assert check.returncode == 0 and secret not in check.stdout + check.stderr
    assert secret not in nats.log_text()


def test_credentials_inside_the_url_still_work_and_are_never_shown(nats, db):
    """NATS_URL=nats://user:password@host keeps working; the log and --check mask the password."""
    password = harness.nats_secret("outbox-relay")[0]
    url = nats.url.replace("nats://", f"nats://outbox-relay:{password}@")
    env = relay_env(db, {"NATS_URL": url})
    svc = harness.Service("outbox-relay", env)
    try:
        svc.start()
        poll(lambda: "nats: connected to" in svc.log_text(), 15, "the relay connected")
        insert_outbox_row(db)
        poll(soon(lambda: stream_messages(nats) == 1), 15, "the event on the stream")
        assert password not in svc.log_text()
        assert "outbox-relay:********@127.0.0.1" in svc.log_text()
    finally:
        svc.close()
    check = harness.run_binary("outbox-relay", "--check", env=env)
    assert check.returncode == 0 and password not in check.stdout
    assert f"NATS_URL=nats://outbox-relay:********@127.0.0.1:{nats.port}" in check.stdout
    # Credentials in the URL and in the settings at once: refused, naming both, not showing them.
    env["NATS_USER"], env["NATS_PASSWORD"] = "outbox-relay", password
    check = harness.run_binary("outbox-relay", "--check", env=env)
    assert check.returncode == 2, check.stdout + check.stderr
    assert "credentials inside NATS_URL and NATS_USER are both set" in check.stderr
    assert password not in check.stdout + check.stderr


def nkey_encode(prefix: bytes, key: bytes) -> str:
    """nkeys' text form: base32 without padding of prefix, key and CRC-16/XMODEM (little-endian)."""
    data = prefix + key
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return base64.b32encode(data + crc.to_bytes(2, "little")).decode().rstrip("=")


def new_user_nkey(folder) -> tuple[str, str]:
    """(public key "U...", seed "SU...") of a new Ed25519 key made by openssl."""
    pem = folder / "nkey.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(pem)], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(pem), "-outform", "DER"], check=True,
                         capture_output=True).stdout
    pub = subprocess.run(["openssl", "pkey", "-in", str(pem), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    pem.unlink()
    user, seed = 20 << 3, 18 << 3
    return (nkey_encode(bytes([user]), pub[-32:]),
            nkey_encode(bytes([seed | user >> 5, (user & 31) << 3]), der[-32:]))


def test_an_nkey_user_publishes_with_its_seed_file(tmp_path, db):
    """The relay's user as an nkey instead of a password: NATS_NKEY_SEED_FILE alone (the public key
    is derived from the seed) logs in, and the relay publishes an event."""
    public, seed = new_user_nkey(tmp_path)
    conf = harness.NATS_CONFIG.read_text()
    login = "user: outbox-relay\n      password: $NATS_PASSWORD_OUTBOX_RELAY"
    assert login in conf
    (tmp_path / "nats.conf").write_text(conf.replace(login, f"nkey: {public}"))
    seed_file = tmp_path / "relay.nk"
    seed_file.write_text(seed + "\n")
    seed_file.chmod(0o600)
    server = harness.Nats(config=tmp_path / "nats.conf")
    svc = None
    try:
        server.start()
        svc = harness.Service("outbox-relay", relay_env(
            db, {"NATS_URL": server.url}, NATS_NKEY_SEED_FILE=str(seed_file)))
        svc.start()
        insert_outbox_row(db)
        poll(soon(lambda: stream_messages(server) == 1), 15, "the event on the stream")
        assert seed not in svc.log_text()
        assert any(c["authorized_user"] == public
                   for c in server.varz("connz", auth="true")["connections"])
        # Another key's seed is refused at start.
        other = tmp_path / "other.nk"
        other.write_text(new_user_nkey(tmp_path)[1] + "\n")
        bad = harness.Service("outbox-relay", relay_env(
            db, {"NATS_URL": server.url}, NATS_NKEY_SEED_FILE=str(other)))
        try:
            bad.start(wait=False)
            assert bad.wait_exit(15) == 1, bad.log_text()
            assert "Authorization Violation" in bad.log_text()
        finally:
            bad.close()
    finally:
        if svc:
            svc.close()
        server.close()


# --- TLS -----------------------------------------------------------------------------------------

@pytest.fixture
def tls_nats():
    certs = harness.make_tls_certs()
    n = harness.Nats(tls=certs)
    n.start()
    yield n
    n.close()


def test_relay_publishes_over_tls_with_a_client_certificate(tls_nats, db):
    """nats-server requires TLS and a client certificate; the relay, given the CA, its
    certificate and key (NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY), publishes an event."""
    svc = harness.Service("outbox-relay", relay_env(db, tls_nats.service_env()))
    try:
        svc.start()
        insert_outbox_row(db)
        poll(soon(lambda: stream_messages(tls_nats) == 1), 15, "the event on the stream")
        conns = tls_nats.varz("connz", auth="true")["connections"]
        assert any(c["name"] == "outbox-relay" and c.get("tls_version") for c in conns), conns
    finally:
        svc.close()


def test_a_client_without_the_ca_is_refused_with_a_clear_error(tls_nats, db):
    """Without NATS_TLS_CA the server's certificate does not verify (the system's CAs did not
    sign it): the relay stops at start and says so, naming the setting to look at."""
    env = relay_env(db, tls_nats.service_env())
    del env["NATS_TLS_CA"]
    log = relay_exit_log(env)
    assert "SSL handshake error" in log and "unable to get local issuer certificate" in log, log
    assert "check NATS_TLS_CA" in log, log
    assert "(conn.c:" not in log
