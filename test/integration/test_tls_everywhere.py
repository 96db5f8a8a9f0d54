"""The whole path with TLS on every link and credentials everywhere, as a real deployment runs it:
HTTPS with bearer tokens into user-api, TLS with verify-full to PostgreSQL for user-api and the
relay, TLS with client certificates to NATS for all three services, TLS to the MongoDB protocol
(FerretDB's TLS listener) for the consumer, HTTPS out of notification-consumer. Then every log,
every answer and every --check of the run is searched for the secrets it set: none may appear."""
import os
import uuid

import requests

import harness
from test_consumer_support import Consumer, poll
from user_api_fixtures import pg_db  # noqa: F401  (fixture)

WRITER = "tls-writer-token-3f9a1c7e5b2d"
READER = "tls-reader-token-8e6d4c2b0a1f"
METRICS = "tls-metrics-token-1a2b3c4d5e6f"


def test_the_end_to_end_path_with_tls_on_every_link(services, tmp_path):
    tls = harness.make_tls_certs(tmp_path / "tls")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{WRITER} read,write\n{READER} read\n{METRICS} metrics\n")
    os.chmod(tokens, 0o600)

    pg = harness.Postgres(template=harness.Postgres.template(migrated=True),
                          tls=(tls.server_cert, tls.server_key))
    nats = harness.Nats(tls=tls)
    ferret_tls_port = harness.free_port()
    ferret = harness.FerretDB(args=[f"--listen-tls=127.0.0.1:{ferret_tls_port}",
                                    f"--listen-tls-cert-file={tls.server_cert}",
                                    f"--listen-tls-key-file={tls.server_key}"])
    answers = []
    try:
        for s in (pg, nats, ferret):
            s.start()
        pg_tls = {"POSTGRES_SSLMODE": "verify-full", "POSTGRES_SSLROOTCERT": str(tls.ca)}
        common = dict(nats.service_env(), API_TOKENS_FILE=str(tokens), LOG_LEVEL="info")
        relay = services.start("outbox-relay", dict(pg.env, **pg_tls, **common,
                                                    OUTBOX_RELAY_PORT=harness.free_port()))
        api_port = harness.free_port()
        api = services.start("user-api", dict(pg.env, **pg_tls, **common, USER_API_PORT=api_port,
                                              USER_API_TLS_CERT=str(tls.server_cert),
                                              USER_API_TLS_KEY=str(tls.server_key)),
                             tls_ca=tls.ca)
        dbname = f"notif_{uuid.uuid4().hex[:8]}"
        mongo_uri = (f"mongodb://127.0.0.1:{ferret_tls_port}/?tls=true&tlsCAFile={tls.ca}")
        svc = services.start("notification-consumer", dict(
            common, MONGODB_URI=mongo_uri, MONGODB_DB=dbname,
            NOTIFICATION_CONSUMER_PORT=harness.free_port(),
            NOTIFICATION_CONSUMER_TLS_CERT=str(tls.server_cert),
            NOTIFICATION_CONSUMER_TLS_KEY=str(tls.server_key)), tls_ca=tls.ca)
        consumer = Consumer(svc, ferret, dbname)

        def call(base, method, path, token, **kw):
            r = requests.request(method, base + path, headers={"Authorization": f"Bearer {token}"},
                                 verify=str(tls.ca), timeout=15, **kw)
            answers.append(f"{r.status_code} {r.headers} {r.text}")
            return r

        poll(lambda: call(svc.url, "GET", "/readyz", METRICS).status_code == 200, 30,
             "the consumer ready over TLS to NATS and MongoDB")
        assert call(relay.url, "GET", "/readyz", METRICS).json()["checks"]["postgres"] == "ok"

        r = call(api.url, "POST", "/users", WRITER, json={"name": "Tls Everywhere",
                                                          "email": "tls@example.com"})
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        r = call(api.url, "PUT", f"/users/{uid}", WRITER, json={"name": "Tls Twice",
                                                                 "email": "tls2@example.com"})
        assert r.status_code == 200, r.text
        got = poll(lambda: (lambda r: r if r.status_code == 200 else None)(
            call(svc.url, "GET", f"/notifications/user/{uid}?min_version=2&wait=5s", READER)),
            30, "the update in the copy")
        assert got.json()["name"] == "Tls Twice" and got.json()["version"] == 2

        # Each link really is TLS: PostgreSQL's view of the services' connections, and a
        # client without the CA refused on every port that a service or server opened.
        with pg.connect(pg.DB) as c:
            rows = c.execute("SELECT a.usename, s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a "
                             "USING (pid) WHERE a.usename LIKE 'user_sync_%'").fetchall()
        assert {u for u, _ in rows} >= {"user_sync_api", "user_sync_relay"}, rows
        assert all(ssl for _, ssl in rows), rows
        for url in (api.url, svc.url):
            try:
                requests.get(url + "/healthz", timeout=5)
                raise AssertionError(f"{url} answered a client that does not trust its CA")
            except requests.exceptions.SSLError:
                pass

        # A replay over the same TLS links rebuilds the same copy.
        rep = harness.run_binary("notification-consumer", "replay",
                                 env=dict(common, MONGODB_URI=mongo_uri, MONGODB_DB=dbname),
                                 timeout=120)
        assert rep.returncode == 0, rep.stderr
        answers.append(rep.stdout + rep.stderr)
        for name, env in (("user-api", dict(pg.env, **pg_tls, **common)),
                          ("notification-consumer", dict(common, MONGODB_URI=mongo_uri))):
            chk = harness.run_binary(name, "--check", env=env)
            assert chk.returncode == 0, chk.stderr
            answers.append(chk.stdout + chk.stderr)
        # And each stops cleanly on SIGTERM: libnats 3.4's cleanup after TLS crashed the exit
        # (common/natsconn.h, natsconn_library_close).
        for s in (api, relay, svc):
            assert s.stop(timeout=20) == 0, s.log_text()[-3000:]
    finally:
        logs = [s.log_text() for s in services.started] + [pg.log_text(), nats.log_text()]
        for s in (ferret, nats, pg):
            s.close()

    secrets = [WRITER, READER, METRICS, harness.nats_secret("outbox-relay")[0],
               harness.nats_secret("notification-consumer")[0], harness.nats_secret("user-api")[0],
               harness.role_password("user_sync_api"), harness.role_password("user_sync_relay"),
               tls.server_key.read_text().splitlines()[1]]
    for text in logs + answers:
        for secret in secrets:
            assert secret not in text, f"a secret appears in the output:\n{text[:2000]}"


def test_secrets_in_settings_never_reach_a_log_or_an_answer(services, nats, pg_db):
    """Passwords inside NATS_URL and MONGODB_URI and in POSTGRES_PASSWORD, against servers that
    refuse them or are not there: --check, the logs, /readyz and the 503 answers name what failed
    without them."""
    secret = "S3cret-" + uuid.uuid4().hex
    dead = harness.free_port()
    mongo_uri = f"mongodb://copyuser:{secret}@127.0.0.1:{dead}/?serverSelectionTimeoutMS=300"
    consumer_env = {"NATS_URL": nats.url.replace("://", f"://intruder:{secret}@", 1),
                    "MONGODB_URI": mongo_uri, "NOTIFICATION_CONSUMER_PORT": harness.free_port(),
                    "MONGODB_TIMEOUT": "300ms"}
    api_env = dict(pg_db.env, POSTGRES_USER="user_sync_api", POSTGRES_PASSWORD=secret,
                   NATS_URL=f"nats://nudger:{secret}@127.0.0.1:{dead}",
                   USER_API_PORT=harness.free_port())
    out = []
    for name, env in (("notification-consumer", dict(consumer_env, NATS_URL=f"nats://x:{secret}@127.0.0.1:{dead}")),
                      ("user-api", api_env)):
        chk = harness.run_binary(name, "--check", env=env)
        assert chk.returncode == 0, chk.stderr
        out.append(chk.stdout + chk.stderr)
    # NATS refuses the intruder: the consumer says so and stops, without the password.
    c = harness.run_binary("notification-consumer", env=consumer_env, timeout=30)
    assert c.returncode != 0
    assert "refused the credentials" in c.stderr, c.stderr
    out.append(c.stdout + c.stderr)
    # PostgreSQL refuses the password: user-api answers 503 and is not ready, naming no secret.
    api = services.start("user-api", api_env)
    r = requests.get(api.url + "/users", timeout=10)
    assert r.status_code == 503, r.text
    ready = requests.get(api.url + "/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["checks"]["postgres"]["status"] == "down"
    out += [r.text, ready.text, str(r.headers)]
    poll(lambda: "password authentication failed" in api.log_text(), 10, "the refusal logged")
    out.append(api.log_text())
    for text in out:
        assert secret not in text, text[:3000]
