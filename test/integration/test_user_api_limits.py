"""user-api connection limits, the connection timeout, the request deadline, the rate limit per
address and the Idempotency-Key lifetime, each set through its environment variable."""
import http.client
import json
import select
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


def metric_sum(api, name, *parts):
    """The sum of the series of metric name whose labels hold every one of parts (0 if none)."""
    total = 0.0
    for line in api.get("/metrics").text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and \
                all(p in line for p in parts):
            total += float(line.rsplit(" ", 1)[1])
    return total


def trickle(api, sock, data, started, limit):
    """Sends data one byte a second on sock while, each second, another connection is served.
    Returns the seconds from started to the moment the server closed sock (EOF or a reset; what
    it sent before, if anything, too), or fails when it is still open after limit seconds."""
    got = b""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started, got
        # Other clients are served while the slow one trickles.
        assert api.get("/healthz", timeout=5).status_code == 200
        end = time.monotonic() + 1
        while (left := end - time.monotonic()) > 0:
            if select.select([sock], [], [], left)[0]:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return time.monotonic() - started, got
                got += chunk
        assert time.monotonic() - started < limit, \
            f"the slow request was still open after {limit} s (answer so far: {got[:200]!r})"
    raise AssertionError("the whole request was sent: make it longer")


def test_headers_trickled_a_byte_a_second_are_cut_off_at_the_request_deadline(start_api):
    """Slowloris: a header byte a second restarts the idle timeout (30 s) with every byte, so only
    the request deadline ends it: the connection is closed (libmicrohttpd cannot answer before the
    headers are in) once USER_API_REQUEST_TIMEOUT has passed since it opened, while every other
    client is served."""
    api = start_api(USER_API_REQUEST_TIMEOUT="3s")
    started = time.monotonic()
    s = socket.create_connection(("127.0.0.1", api.port), timeout=15)
    try:
        head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 100
        closed, answer = trickle(api, s, head, started, limit=3 + 5)
    finally:
        s.close()
    assert closed >= 3, f"cut off after {closed:.1f} s, before the deadline"
    assert not answer.startswith(b"HTTP/1.1 2"), answer[:200]
    assert metric_sum(api, "http_requests_cut_off_total", 'phase="headers"') == 1
    assert api.get("/healthz").status_code == 200


def test_a_body_trickled_a_byte_a_second_is_cut_off_at_the_request_deadline(start_api):
    """The same for a body: whole headers, then a byte a second. The deadline covers both; the
    connection is closed without an answer (none can be sent in the middle of an upload) and
    nothing is written."""
    api = start_api(USER_API_REQUEST_TIMEOUT="3s")
    body = json.dumps({"name": "Slow Body", "email": unique_email()}).encode()
    with api.unchanged():
        started = time.monotonic()
        s = socket.create_connection(("127.0.0.1", api.port), timeout=15)
        try:
            s.sendall(b"POST /users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body))
            closed, answer = trickle(api, s, body, started, limit=3 + 5)
        finally:
            s.close()
    assert closed >= 3, f"cut off after {closed:.1f} s, before the deadline"
    assert answer == b"", answer[:200]
    assert metric_sum(api, "http_requests_cut_off_total", 'phase="body"') == 1


def test_a_request_that_arrives_whole_is_not_held_to_the_deadline(start_api):
    """A kept-alive connection may wait between requests longer than the request deadline (its
    idle timeout applies there), and then is served: the deadline is for a request in arrival,
    and counts nothing that was not cut off."""
    api = start_api(USER_API_REQUEST_TIMEOUT="1s")
    s = keep_alive_connection(api.port)
    try:
        time.sleep(2.5)
        s.sendall(REQUEST)
        assert read_all(s).startswith(b"HTTP/1.1 200"), "the kept-alive connection was closed"
    finally:
        s.close()
    assert metric_sum(api, "http_requests_cut_off_total") == 0


def test_request_headers_of_15_kib_are_served_and_larger_ones_answered_431(start_api):
    """README: request headers may take up to about 15 KiB (the connection's memory, which
    libmicrohttpd zeroes after every request, is 16 KiB); beyond, 431, and the server goes on."""
    api = start_api()
    for size, status in ((14 * 1024, b"200"), (20 * 1024, b"431")):
        s = socket.create_connection(("127.0.0.1", api.port), timeout=10)
        try:
            s.sendall(b"GET /users?limit=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                      b"X-Padding: " + b"a" * size + b"\r\n\r\n")
            answer = read_all(s)
        finally:
            s.close()
        assert answer.startswith(b"HTTP/1.1 " + status), (size, answer[:200])
    assert api.get("/users?limit=1").status_code == 200


def get_from(source, port, path="/healthz"):
    """GET path on user-api from the local address source (127.0.0.1, 127.0.0.2, ...): every
    address of 127.0.0.0/8 is this machine, so one test has several client addresses."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_rate_limit_answers_429_with_retry_after_per_address_and_recovers(start_api):
    """USER_API_RATE_LIMIT requests a second with a burst of USER_API_RATE_BURST, per address:
    beyond it 429 problem+json with Retry-After in whole seconds; another address is served
    meanwhile; after Retry-After the address is served again."""
    api = start_api(USER_API_RATE_LIMIT="1", USER_API_RATE_BURST="5",
                    USER_API_RATE_LIMIT_LOOPBACK="true")
    t0 = time.monotonic()
    statuses = [get_from("127.0.0.2", api.port)[0] for _ in range(5)]
    assert statuses == [200] * 5, statuses
    # One token a second comes back: 30 more requests meet an empty bucket unless they took
    # 25 seconds.
    refused = None
    for _ in range(30):
        status, headers, body = get_from("127.0.0.2", api.port)
        if status == 429:
            refused = (headers, body)
            break
    assert refused is not None, f"no 429 beyond the burst in {time.monotonic() - t0:.1f} s"
    headers, body = refused
    assert headers["content-type"].startswith("application/problem+json"), headers
    problem = json.loads(body)
    assert problem["status"] == 429 and problem["title"] == "Too Many Requests", problem
    assert headers["retry-after"].isdigit() and int(headers["retry-after"]) >= 1, headers
    # Another address has a bucket of its own.
    assert get_from("127.0.0.1", api.port)[0] == 200
    time.sleep(int(headers["retry-after"]) + 0.2)
    assert get_from("127.0.0.2", api.port)[0] == 200
    assert metric_sum(api, "http_requests_total", 'code="429"') >= 1


def test_loopback_is_not_rate_limited_by_default(start_api):
    """Without USER_API_RATE_LIMIT_LOOPBACK the machine itself (a proxy in front, the benchmark,
    these tests) is not limited."""
    api = start_api(USER_API_RATE_LIMIT="1", USER_API_RATE_BURST="1")
    assert [get_from("127.0.0.2", api.port)[0] for _ in range(20)] == [200] * 20


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
