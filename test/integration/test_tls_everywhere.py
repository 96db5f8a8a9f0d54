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
