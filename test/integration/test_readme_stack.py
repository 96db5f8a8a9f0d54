"""The README's promise, literally: deploy/run.sh (what `make run` runs after bootstrap and build)
brings up the whole stack, and the demo's curl examples, as written in the README, work against it.
The stack runs on free ports and in a run folder of its own, never the developer's .run."""
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import requests

from harness import REPO_ROOT, free_port, wait_for


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
           if k not in ("POSTGRES_HOST", "NATS_URL", "MONGODB_URI")}
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
