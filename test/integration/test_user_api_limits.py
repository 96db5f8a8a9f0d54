"""user-api connection limits, the connection timeout and the Idempotency-Key lifetime, each set
through its environment variable."""
import socket
import time
import uuid

from user_api_fixtures import *  # noqa: F401,F403  (fixtures: pg_db, start_api)
from user_api_fixtures import poll, unique_email

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def read_all(s):
    data = b""
    while True:
        try:
            got = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not got:
            break
        data += got
    return data


def keep_alive_connection(port):
    """A connection on which one GET /healthz was answered and that stays open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        got = s.recv(65536)
        assert got, f"connection closed before an answer: {data!r}"
        data += got
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += s.recv(65536)
    return s


def test_stalled_connection_is_closed_after_the_timeout(start_api):
    """A client that sends half a request header and stops (slowloris) is dropped after
    USER_API_CONN_TIMEOUT, and meanwhile others are served."""
    api = start_api(USER_API_CONN_TIMEOUT="1")
    s = socket.create_connection(("127.0.0.1", api.port), timeout=15)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: local")
        assert api.get("/healthz").status_code == 200
        t0 = time.monotonic()
        data = read_all(s)           # returns at EOF; the socket timeout (15 s) guards a hang
        assert time.monotonic() - t0 < 14, "the stalled connection was never closed"
        assert not data.startswith(b"HTTP/1.1 2"), data[:100]
    finally:
        s.close()


def test_connections_per_ip_are_limited(start_api):
    api = start_api(USER_API_MAX_CONNECTIONS_PER_IP="4")
    # Four kept-alive connections, each proven accepted by a served request, one at a time.
    held = [keep_alive_connection(api.port) for _ in range(4)]
    try:
        extra = socket.create_connection(("127.0.0.1", api.port), timeout=10)
        try:
            try:
                extra.sendall(REQUEST)
            except (BrokenPipeError, ConnectionResetError):
                pass
            data = read_all(extra)
            assert not data.startswith(b"HTTP/1.1 200"), "a fifth connection from one address was served"
        finally:
            extra.close()
    finally:
        for s in held:
            s.close()
    poll(lambda: api.get("/healthz", timeout=5).status_code == 200 or None, timeout=10,
         what="service once the connections were closed")


def test_idempotency_key_expires(start_api):
    api = start_api(USER_API_IDEMPOTENCY_TTL="1s")
    key = "ttl-" + uuid.uuid4().hex
    r1 = api.post("/users", json={"name": "TTL", "email": unique_email()}, headers={"Idempotency-Key": key})
    assert r1.status_code == 201, r1.text
    # Expired in the database's clock, which the API's lookup compares with (or swept already).
    poll(lambda: api.sql_one("SELECT count(*) = 0 FROM idempotency_keys WHERE key = %s "
                             "AND expires_at > clock_timestamp()", (key,))[0],
         timeout=10, what="the key to expire")
    # Expired: the key is free again, so another body under it is a new request, not a 422.
    r2 = api.post("/users", json={"name": "TTL 2", "email": unique_email()}, headers={"Idempotency-Key": key})
    assert r2.status_code == 201, r2.text
    assert r2.json()["id"] != r1.json()["id"]


def test_expired_keys_are_swept(start_api):
    """USER_API_KEY_SWEEP_INTERVAL and USER_API_KEY_SWEEP_BATCH at work: five expired keys,
    removed two per statement, are all gone from the table within a few sweeps."""
    api = start_api(USER_API_IDEMPOTENCY_TTL="1s", USER_API_KEY_SWEEP_INTERVAL="1s",
                    USER_API_KEY_SWEEP_BATCH="2")
    keys = ["sweep-" + uuid.uuid4().hex for _ in range(5)]
    for k in keys:
        r = api.post("/users", json={"name": "Sweep", "email": unique_email()}, headers={"Idempotency-Key": k})
        assert r.status_code == 201, r.text
    poll(lambda: api.sql_one("SELECT count(*) = 0 FROM idempotency_keys WHERE key = ANY(%s)", (keys,))[0],
         timeout=15, what="the sweep to remove the expired keys")
