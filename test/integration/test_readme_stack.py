"""The README's promise, literally: deploy/run.sh (what `make run` runs after bootstrap and build)
brings up the whole stack, and the demo's curl examples, as written in the README, work against it.
The stack runs on free ports and in a run folder of its own, never the developer's .run."""
import json
import os
import re
import signal
import stat
import subprocess
import tempfile
import time

import psycopg
import requests

from harness import PG_ROLES, REPO_ROOT, free_port, wait_for

PG_KEYS = {"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"}
# What each process's .run/<process>.env must hold to reach what make infra started.
ENV_KEYS = {
    "user-api": PG_KEYS | {"NATS_URL", "USER_API_PORT"},
    "outbox-relay": PG_KEYS | {"NATS_URL", "OUTBOX_RELAY_PORT"},
    "notification-consumer": {"NATS_URL", "MONGODB_URI", "NOTIFICATION_CONSUMER_PORT"},
    "migrate": PG_KEYS,
    "audit": PG_KEYS | {"MONGODB_URI", "AUDIT_PORT"},
}


def check_env_files(run_dir, ports, bin_dir):
    """Each .run/<process>.env: mode 0600, KEY=VALUE lines with what the process needs, its own
    PostgreSQL role; sourced as the README says, a binary run by hand works with it."""
    for name, keys in ENV_KEYS.items():
        path = os.path.join(run_dir, f"{name}.env")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        lines = [ln for ln in open(path).read().splitlines() if ln and not ln.startswith("#")]
        assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", ln) for ln in lines), lines
        env = dict(ln.split("=", 1) for ln in lines)
        assert keys <= env.keys(), (name, env.keys())
        if "POSTGRES_USER" in keys:
            assert env["POSTGRES_USER"] == PG_ROLES[name] and len(env["POSTGRES_PASSWORD"]) >= 32
            assert env["POSTGRES_PORT"] == str(ports["POSTGRES_PORT"])
        if "NATS_URL" in keys:
            assert env["NATS_URL"] == f"nats://127.0.0.1:{ports['NATS_PORT']}"
        if "MONGODB_URI" in keys:
            assert env["MONGODB_URI"] == f"mongodb://127.0.0.1:{ports['MONGODB_PORT']}/"
        for var in ("USER_API_PORT", "OUTBOX_RELAY_PORT", "NOTIFICATION_CONSUMER_PORT"):
            if var in keys:
                assert env[var] == str(ports[var])
    # The README's way of running a binary by hand: the auditor finds the copy in step.
    r = subprocess.run(["bash", "-c", 'set -a; . "$1"; set +a; exec "$2"', "audit",
                        os.path.join(run_dir, "audit.env"), os.path.join(bin_dir, "audit")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # The services run as their roles, never as the superuser (on the unix socket: the only way
    # in for it).
    with psycopg.connect(host=os.path.realpath(os.path.join(run_dir, "pg")),
                         port=ports["POSTGRES_PORT"], user="postgres", dbname="users_db") as c:
        seen = dict(c.execute("SELECT DISTINCT application_name, usename FROM pg_stat_activity "
                              "WHERE application_name IN ('user-api', 'outbox-relay')").fetchall())
    assert seen == {"user-api": PG_ROLES["user-api"], "outbox-relay": PG_ROLES["outbox-relay"]}


def readme_demo_block():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The demo's examples"):]
    return section[section.index("```sh") + 5:section.index("```", section.index("```sh") + 5)]


def split_commands(block):
    """Joins the README's continued lines into one command each."""
    cmds, cur = [], ""
    for line in block.splitlines():
        if not line.strip() and not cur:
            continue
        cur += line + "\n"
        if not line.rstrip().endswith("\\") and cur.count("'") % 2 == 0:
            cmds.append(cur.strip())
            cur = ""
    return cmds


def test_make_run_serves_the_readme_curl_examples():
    ports = {name: free_port() for name in ("POSTGRES_PORT", "NATS_PORT", "NATS_MONITOR_PORT",
                                            "MONGODB_PORT", "USER_API_PORT",
                                            "NOTIFICATION_CONSUMER_PORT", "OUTBOX_RELAY_PORT")}
    run_dir = tempfile.mkdtemp(prefix="it-readme-run-")
    os.chmod(run_dir, 0o755)  # PostgreSQL runs as `postgres` and must reach its data folder
    env = {k: v for k, v in os.environ.items()
           if k not in ("POSTGRES_HOST", "NATS_URL", "MONGODB_URI", "API_TOKENS_FILE")}
    env.update({k: str(v) for k, v in ports.items()})
    env["RUN_DIR"] = run_dir
    env["BIN_DIR"] = os.environ.get("BIN_DIR", str(REPO_ROOT / "bin"))
    if not os.path.isabs(env["BIN_DIR"]):
        env["BIN_DIR"] = str(REPO_ROOT / env["BIN_DIR"])
    log = open(os.path.join(run_dir, "run.out"), "w+")
    # SIGINT as a terminal's Ctrl-C finds it: a shell started with SIGINT ignored (a test run
    # started in the background) cannot trap it, and run.sh would never see the Ctrl-C below.
    proc = subprocess.Popen(["bash", str(REPO_ROOT / "deploy" / "run.sh")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    api = f"http://localhost:{ports['USER_API_PORT']}"
    copy = f"http://localhost:{ports['NOTIFICATION_CONSUMER_PORT']}"
    try:
        def up():
            assert proc.poll() is None, open(log.name).read()[-3000:]
            try:
                return all(requests.get(u + "/readyz", timeout=1).status_code == 200
                           for u in (api, copy, f"http://localhost:{ports['OUTBOX_RELAY_PORT']}"))
            except requests.RequestException:
                return False
        wait_for(up, timeout=120, interval=0.5, what="the stack of deploy/run.sh to be ready")

        outputs = []
        for cmd in split_commands(readme_demo_block()):
            cmd = cmd.replace("localhost:8080", f"localhost:{ports['USER_API_PORT']}")
            cmd = cmd.replace("localhost:8081", f"localhost:{ports['NOTIFICATION_CONSUMER_PORT']}")
            if "/notifications" in cmd:   # every command on port 8081 (a free port may hold "8081")
                continue  # the copy is checked below, once the events have arrived
            r = subprocess.run(["bash", "-c", cmd + " --silent --show-error --fail"],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, f"{cmd}\n{r.stderr}"
            outputs.append(json.loads(r.stdout))

        listed, created, updated = outputs[0], outputs[1], outputs[2]
        assert listed == []
        assert created["id"] == 1 and created["name"] == "John Doe"
        assert created["email"] == "john@example.com"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", created["updated_at"])
        assert updated["id"] == 1 and updated["name"] == "John Doe Updated"
        assert updated["email"] == "john.updated@example.com"

        def mirrored():
            r = requests.get(copy + "/notifications/user/1", timeout=2)
            return r.json() if r.status_code == 200 and r.json().get("version") == 2 else None
        doc = wait_for(mirrored, timeout=30, interval=0.2, what="user 1 at version 2 in the copy")
        assert {k: doc[k] for k in ("user_id", "name", "email", "updated_at")} == {
            "user_id": 1, "name": "John Doe Updated", "email": "john.updated@example.com",
            "updated_at": updated["updated_at"]}
        listing = requests.get(copy + "/notifications", timeout=2).json()
        assert [d["user_id"] for d in listing] == [1]
        # make run's nats-server syncs every write (deploy/nats-server.conf)
        varz = requests.get(f"http://127.0.0.1:{ports['NATS_MONITOR_PORT']}/varz", timeout=2).json()
        assert varz["jetstream"]["config"]["sync_always"] is True
        check_env_files(run_dir, ports, env["BIN_DIR"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            rc = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        out = open(log.name).read()
        log.close()
        subprocess.run(["rm", "-rf", run_dir])
    assert rc == 0, f"deploy/run.sh ended with {rc} after Ctrl-C:\n{out[-3000:]}"
    # Without API_TOKENS_FILE the demo's curl examples work unauthenticated, and run.sh says so.
    assert "no API_TOKENS_FILE: the APIs answer anyone without a token, on 127.0.0.1 only" in out, \
        out[-3000:]
