"""Who may call the HTTP APIs, and over what: loopback by default, bearer tokens with scopes from
API_TOKENS_FILE (reloaded on SIGHUP), HTTPS with a certificate and key. Checked on user-api
(8080) and notification-consumer (8081), which share common/httpd.c and common/auth.c."""
import hashlib
import os
import signal
import subprocess

import pytest
import requests

import harness
from test_consumer_support import Stream, make_event, start_consumer
from user_api_fixtures import *  # noqa: F401,F403  (fixtures: pg_db, start_api)
from user_api_fixtures import assert_problem, base_env, poll, unique_email

READER = "reader-token-8a1f3c0d9e2b"
WRITER = "writer-token-77c2e9a41b5d"
METRICS = "metrics-token-1d0b6f2e8c3a"
HASHED = "hashed-token-5e4d3c2b1a09"    # in the file by its digest only
LATER = "later-token-0f9e8d7c6b5a"      # added by a reload


def tokens_file(path, *lines):
    path.write_text("# tokens of the test\n" + "".join(f"{line}\n" for line in lines))
    os.chmod(path, 0o600)
    return str(path)


def default_tokens(tmp_path):
    return tokens_file(tmp_path / "tokens", f"{READER} read", f"{WRITER} read,write  # the writer",
                       f"{METRICS} metrics",
                       f"sha256:{hashlib.sha256(HASHED.encode()).hexdigest()} read")


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_401(r, error=None):
    assert_problem(r, 401)
    challenge = r.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer "), r.headers
    if error:
        assert f'error="{error}"' in challenge, challenge
    else:
        assert "error=" not in challenge, challenge


def assert_403(r, scope):
    assert_problem(r, 403)
    challenge = r.headers.get("WWW-Authenticate", "")
    assert 'error="insufficient_scope"' in challenge and f'scope="{scope}"' in challenge, challenge


def secrets_absent(text):
    for t in (READER, WRITER, METRICS, HASHED, LATER):
        assert t not in text, f"a token appears in the output: {t}"


# --- loopback by default -------------------------------------------------------------------------

@pytest.mark.parametrize("binary,bind", [("user-api", "USER_API_BIND"),
                                         ("notification-consumer", "NOTIFICATION_CONSUMER_BIND"),
                                         ("outbox-relay", "OUTBOX_RELAY_BIND"),
                                         ("audit", "AUDIT_BIND")])
def test_loopback_by_default_and_elsewhere_only_with_tokens(binary, bind, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_BIND") and k != "API_TOKENS_FILE"}
    r = harness.run_binary(binary, "--check", env=env)
    assert r.returncode == 0, r.stderr
    assert f"{bind}=127.0.0.1" in r.stdout.splitlines(), r.stdout

    r = harness.run_binary(binary, "--check", env=dict(env, **{bind: "0.0.0.0"}))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing to listen on 0.0.0.0 without authentication: set API_TOKENS_FILE" in r.stderr

    ok = harness.run_binary(binary, "--check", env=dict(env, **{bind: "0.0.0.0"},
                                                       API_TOKENS_FILE=default_tokens(tmp_path)))
    assert ok.returncode == 0, ok.stderr
    secrets_absent(ok.stdout + ok.stderr)

    bad = tokens_file(tmp_path / "bad", f"{READER} read", f"{WRITER} read,admin")
    r = harness.run_binary(binary, "--check", env=dict(env, API_TOKENS_FILE=bad))
    assert r.returncode == 2
    assert f'{bad}, line 3: unknown scope "admin"' in r.stderr, r.stderr
    secrets_absent(r.stdout + r.stderr)


def test_a_service_started_without_tokens_says_it_is_loopback_only(start_api):
    a = start_api()
    assert a.get("/users").status_code == 200
    log = a.service.log_text()
    assert "without authentication (no API_TOKENS_FILE): loopback only" in log, log


# --- tokens and scopes ----------------------------------------------------------------------------

def test_user_api_tokens_and_scopes(start_api, tmp_path):
    a = start_api(API_TOKENS_FILE=default_tokens(tmp_path))
    before = a.counts()

    # No token, a token of another scheme, a wrong token: 401 with the challenge; nothing written.
    assert_401(a.get("/users"))
    assert_401(a.post("/users", json={"name": "x", "email": unique_email()}))
    assert_401(a.get("/users", headers={"Authorization": "Basic cmVhZGVyOnRva2Vu"}))
    assert_401(a.get("/users", headers=bearer("not-a-token-of-the-file")), "invalid_token")
    assert_401(a.get("/users", headers=bearer(READER + "x")), "invalid_token")
    assert_401(a.delete("/users/1", headers=bearer("nope-nope-nope-nope")), "invalid_token")
    # Refused before the route: an unknown path tells nothing to a caller without a token.
    assert_401(a.get("/no/such/path"))

    # A reader reads and cannot write.
    assert a.get("/users", headers=bearer(READER)).status_code == 200
    assert a.get("/users", headers=bearer(HASHED)).status_code == 200
    assert_403(a.post("/users", json={"name": "x", "email": unique_email()}, headers=bearer(READER)),
               "write")
    assert a.counts() == before

    # A writer writes and reads.
    r = a.post("/users", json={"name": "Ada", "email": unique_email()}, headers=bearer(WRITER))
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    assert a.get(f"/users/{uid}", headers=bearer(WRITER)).json()["name"] == "Ada"
    assert_403(a.put(f"/users/{uid}", json={"name": "Eve", "email": unique_email()},
                     headers=bearer(HASHED)), "write")
    assert_403(a.delete(f"/users/{uid}", headers=bearer(READER)), "write")
    assert a.get(f"/users/{uid}", headers=bearer(READER)).json()["name"] == "Ada"

    # /metrics needs the metrics scope; /healthz is open; /readyz tells its checks only to it.
    assert_403(a.get("/metrics", headers=bearer(WRITER)), "metrics")
    assert_401(a.get("/metrics"))
    m = a.get("/metrics", headers=bearer(METRICS))
    assert m.status_code == 200 and 'code="401"' in m.text and 'code="403"' in m.text
    assert_403(a.get("/users", headers=bearer(METRICS)), "read")
    assert a.get("/healthz").json() == {"status": "ok"}
    assert a.get("/readyz").json() == {"status": "ready"}
    assert a.get("/readyz", headers=bearer(READER)).json() == {"status": "ready"}
    assert a.get("/readyz", headers=bearer(METRICS)).json()["checks"]["postgres"]["status"] == "up"

    # Each refusal is logged, with no token in the log.
    log = a.service.log_text()
    assert "refused a request for /users from 127.0.0.1: no bearer token" in log, log
    assert "refused a request for /users from 127.0.0.1: a token that is not valid" in log
    assert "refused a request for /users from 127.0.0.1: a token without the scope" in log
    assert "refused a request for an unknown path from 127.0.0.1" in log
    secrets_absent(log)


def test_a_refused_upload_is_not_read(start_api, tmp_path):
    """A caller without the write scope is answered before its body is read."""
    a = start_api(API_TOKENS_FILE=default_tokens(tmp_path), USER_API_MAX_BODY="1024")
    big = b'{"name": "' + b"x" * 4000 + b'"}'
    r = a.post("/users", data=big, headers=dict(bearer(READER), **{"Content-Type": "application/json"}))
    assert_403(r, "write")
    r = a.post("/users", data=big, headers={"Content-Type": "application/json"})
    assert_401(r)


def test_sighup_rereads_the_tokens_and_a_bad_file_keeps_the_old_ones(start_api, tmp_path):
    path = tmp_path / "tokens"
    a = start_api(API_TOKENS_FILE=tokens_file(path, f"{READER} read", f"{WRITER} write"))
    assert a.get("/users", headers=bearer(READER)).status_code == 200
    assert_401(a.get("/users", headers=bearer(LATER)), "invalid_token")

    tokens_file(path, f"{LATER} read")
    a.proc.send_signal(signal.SIGHUP)
    poll(lambda: a.get("/users", headers=bearer(LATER)).status_code == 200, 10, "the new token")
    assert_401(a.get("/users", headers=bearer(READER)), "invalid_token")
    poll(lambda: "reloaded the API tokens: 1 in use" in a.service.log_text(), 5, "the reload logged")

    # A file with a mistake: the tokens in use stay, and the log says why.
    tokens_file(path, f"{READER} read", "short read")
    a.proc.send_signal(signal.SIGHUP)
    poll(lambda: "could not reload the API tokens, the 1 in use stay" in a.service.log_text(), 10,
         "the failed reload logged")
    assert "line 3: a token is at least 16 characters long" in a.service.log_text()
    assert a.get("/users", headers=bearer(LATER)).status_code == 200
    assert_401(a.get("/users", headers=bearer(READER)), "invalid_token")
    assert a.proc.poll() is None
    secrets_absent(a.service.log_text())


def test_consumer_tokens_and_scopes(nats, ferret, services, tmp_path):
    stream = Stream(nats)
    stream.create()
    c = start_consumer(services, nats, ferret, wait_ready=False,
                       API_TOKENS_FILE=default_tokens(tmp_path), NOTIFICATION_CONSUMER_BIND="0.0.0.0")
    poll(lambda: c.ready().status_code == 200, 20, "consumer ready")
    assert c.ready().json() == {"status": "ready"}
    checks = c.get("/readyz", headers=bearer(METRICS)).json()["checks"]
    assert checks["mongodb"] == "ok" and checks["nats"] == "ok", checks
    stream.publish([make_event("user_created", 1, 1)])
    c.wait_version(1, 1)

    assert_401(c.get("/notifications"))
    assert_401(c.get("/notifications/user/1", headers=bearer("not-a-token-of-the-file")),
               "invalid_token")
    assert_403(c.get("/notifications/user/1", headers=bearer(METRICS)), "read")
    assert c.get("/notifications/user/1", headers=bearer(READER)).json()["version"] == 1
    assert c.get("/notifications/user/1/events", headers=bearer(HASHED)).status_code == 200
    assert c.get("/notifications", headers=bearer(WRITER)).status_code == 200
    # The read API has nothing to write: a write is refused for want of the scope, then routed.
    assert_403(requests.post(c.base + "/notifications", headers=bearer(READER), timeout=5), "write")
    assert requests.post(c.base + "/notifications", headers=bearer(WRITER), timeout=5).status_code == 405
    assert_401(c.get("/metrics"))
    assert c.get("/metrics", headers=bearer(METRICS)).status_code == 200
    secrets_absent(c.service.log_text())


# --- HTTPS ----------------------------------------------------------------------------------------

def make_certs(d):
    """(ca, server certificate for 127.0.0.1, its key) made by the harness with openssl."""
    t = harness.make_tls_certs(d)
    return t.ca, t.server_cert, t.server_key


def test_https_with_a_certificate_and_key(pg_db, tmp_path):
    ca, cert, key = make_certs(tmp_path)
    port = harness.free_port()
    svc = harness.Service("user-api", env=base_env(pg_db, USER_API_PORT=port,
                                                    USER_API_TLS_CERT=cert, USER_API_TLS_KEY=key,
                                                    API_TOKENS_FILE=default_tokens(tmp_path)),
                          port=port, tls_ca=ca)
    try:
        svc.start()
        url = f"https://127.0.0.1:{port}"
        r = requests.post(url + "/users", json={"name": "Tls", "email": unique_email()},
                          headers=bearer(WRITER), verify=str(ca), timeout=10)
        assert r.status_code == 201, r.text
        assert requests.get(url + f"/users/{r.json()['id']}", headers=bearer(READER), verify=str(ca),
                            timeout=10).json()["name"] == "Tls"
        # Plain HTTP on the HTTPS port gets no answer; a client that does not trust the CA fails.
        with pytest.raises(requests.RequestException):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url + "/healthz", timeout=5)
        assert "HTTPS on 127.0.0.1" in svc.log_text()
    finally:
        svc.close()


def test_https_settings_that_do_not_fit_are_refused(tmp_path):
    ca, cert, key = make_certs(tmp_path)
    env = {"USER_API_TLS_CERT": str(cert)}
    r = harness.run_binary("user-api", "--check", env=env)
    assert r.returncode == 2 and "HTTPS needs both USER_API_TLS_CERT and USER_API_TLS_KEY" in r.stderr
    # A key file that cannot be read, and a key that is not the certificate's: the server does
    # not start, and says which setting or why.
    port = harness.free_port()
    base = {"USER_API_PORT": str(port), "USER_API_TLS_CERT": str(cert)}
    r = harness.run_binary("user-api", env=dict(base, USER_API_TLS_KEY=str(tmp_path / "missing.key")),
                           timeout=30)
    assert r.returncode != 0
    assert f'could not read USER_API_TLS_KEY "{tmp_path / "missing.key"}"' in r.stderr, r.stderr
    r = harness.run_binary("user-api", env=dict(base, USER_API_TLS_KEY=str(tmp_path / "client.key")),
                           timeout=30)
    assert r.returncode != 0
    assert "the certificate and key are not a valid PEM pair" in r.stderr, r.stderr
    r = harness.run_binary("notification-consumer", "--check",
                           env={"NOTIFICATION_CONSUMER_TLS_KEY": str(key)})
    assert r.returncode == 2
    assert "HTTPS needs both NOTIFICATION_CONSUMER_TLS_CERT and NOTIFICATION_CONSUMER_TLS_KEY" in r.stderr


def test_make_infra_writes_the_tokens_file_into_the_env_files(tmp_path):
    """README: with API_TOKENS_FILE set, make infra writes it, as an absolute path, into each
    .run/<process>.env, so a binary started by hand from its file asks for tokens too; without it,
    no line."""
    infra = harness.REPO_ROOT / "deploy" / "infra.sh"
    r = subprocess.run(["bash", "-c", f'. "{infra}" && http_env'], cwd=tmp_path, timeout=30,
                       capture_output=True, text=True, env=dict(os.environ, API_TOKENS_FILE="tokens"))
    assert r.returncode == 0 and r.stdout == f"API_TOKENS_FILE={tmp_path / 'tokens'}\n", r
    env = {k: v for k, v in os.environ.items() if k != "API_TOKENS_FILE"}
    r = subprocess.run(["bash", "-c", f'. "{infra}" && http_env'], cwd=tmp_path, timeout=30,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout == "", r
    assert "http_env && env_line USER_API_PORT" in infra.read_text()
