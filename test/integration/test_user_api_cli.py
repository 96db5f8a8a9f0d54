"""user-api as a program: --help, --version, --check, configuration, and shutdown."""
import json
import signal
import subprocess

import pytest

import harness
from user_api_fixtures import *  # noqa: F401,F403  (fixtures: pg_db, start_api)
from user_api_fixtures import assert_problem, base_env, unique_email, user_api_binary

SETTINGS = ["POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
            "NATS_URL", "USER_API_PORT", "USER_API_BIND", "USER_API_PG_CONNECTIONS", "USER_API_MAX_BODY",
            "LOG_LEVEL"]


def run(args, env=None, timeout=20):
    binary = user_api_binary()
    r = subprocess.run([binary] + args, env=env if env is not None else base_env(),
                       capture_output=True, text=True, timeout=timeout)
    assert not harness.sanitizer_reports(binary, r.stderr), r.stderr
    return r


def test_help_lists_every_setting():
    r = run(["--help"])
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    missing = [s for s in SETTINGS if s not in out]
    assert not missing, out
    assert "8080" in out and "65536" in out, "defaults are shown"


def test_version():
    r = run(["--version"])
    assert r.returncode == 0, r.stderr
    assert (r.stdout + r.stderr).strip()


def test_check_with_good_settings_exits_0_and_prints_the_values(pg_db):
    env = base_env(pg_db)
    r = run(["--check"], env={**env, "LOG_LEVEL": "warn"})
    assert r.returncode == 0, (r.stdout, r.stderr)
    values = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
    assert values["LOG_LEVEL"] == "warn"
    assert values["POSTGRES_PASSWORD"] == "********"   # never printed
    assert values["POSTGRES_PORT"] == str(env["POSTGRES_PORT"])


@pytest.mark.parametrize("name,value", [
    ("USER_API_PORT", "abc"),
    ("USER_API_PORT", "70000"),
    ("USER_API_PORT", "-1"),
    ("USER_API_PG_CONNECTIONS", "0"),
    ("USER_API_PG_CONNECTIONS", "many"),
    ("USER_API_MAX_BODY", "-5"),
    ("USER_API_MAX_BODY", "1k2"),
    ("POSTGRES_PORT", "5432x"),
    ("LOG_LEVEL", "loud"),
])
def test_check_with_a_bad_value_exits_2_naming_it(name, value):
    env = base_env()
    env[name] = value
    r = run(["--check"], env=env)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert name in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_start_with_a_bad_value_exits_2():
    env = base_env()
    env["USER_API_PORT"] = "abc"
    r = run([], env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "USER_API_PORT" in r.stderr


def test_unknown_argument_is_a_usage_error():
    r = run(["--no-such-flag"])
    assert r.returncode not in (0, None), r
    assert r.returncode != -signal.SIGSEGV


def test_sigterm_exits_0(start_api):
    api = start_api()
    assert api.get("/healthz").status_code == 200
    api.proc.send_signal(signal.SIGTERM)
    assert api.proc.wait(15) == 0


def test_sigint_exits_0(start_api):
    api = start_api()
    assert api.get("/healthz").status_code == 200
    api.proc.send_signal(signal.SIGINT)
    assert api.proc.wait(15) == 0


def test_max_body_setting_is_honoured(start_api):
    api = start_api(USER_API_MAX_BODY="1024")
    body = json.dumps({"name": "x" * 1500, "email": unique_email()}).encode()
    with api.unchanged():
        assert_problem(api.request("POST", "/users", data=body,
                                   headers={"Content-Type": "application/json"}), 413)
    r = api.post("/users", json={"name": "small", "email": unique_email()})
    assert r.status_code == 201, r.text


def test_runs_without_nats(start_api):
    """NATS_URL names a port where nothing listens: writes still succeed (the nudge is fire and
    forget) and readiness does not depend on NATS."""
    api = start_api()
    r = api.post("/users", json={"name": "No NATS", "email": unique_email()})
    assert r.status_code == 201, r.text
    assert api.get("/readyz").status_code == 200
    assert api.process_alive()
