"""The README's promise, literally: deploy/run.sh (what `make run` runs after bootstrap and build)
brings up the whole stack and says what is where; the demo's curl examples and its debugging
commands (nats, psql, mongosh), as written in the README, work against it; Ctrl-C stops all of it.
The stack runs on free ports and in a run folder of its own, never the developer's .run. One stack
serves the tests of this file, in their order: the curl examples expect no user yet."""
import asyncio
import json
import os
import pathlib
import re
import select
import signal
import stat
import subprocess
import tempfile
import time

import nats
import psycopg
import pytest
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


class Stack:
    """deploy/run.sh on free ports, its output in run_dir/run.out."""

    def __init__(self):
        self.ports = {name: free_port() for name in (
            "POSTGRES_PORT", "NATS_PORT", "NATS_MONITOR_PORT", "MONGODB_PORT", "USER_API_PORT",
            "NOTIFICATION_CONSUMER_PORT", "OUTBOX_RELAY_PORT")}
        self.run_dir = tempfile.mkdtemp(prefix="it-readme-run-")
        os.chmod(self.run_dir, 0o755)  # PostgreSQL runs as `postgres` and must reach its data folder
        env = {k: v for k, v in os.environ.items()
               if k not in ("POSTGRES_HOST", "NATS_URL", "MONGODB_URI", "API_TOKENS_FILE")}
        env.update({k: str(v) for k, v in self.ports.items()})
        env["RUN_DIR"] = self.run_dir
        env["BIN_DIR"] = os.environ.get("BIN_DIR", str(REPO_ROOT / "bin"))
        if not os.path.isabs(env["BIN_DIR"]):
            env["BIN_DIR"] = str(REPO_ROOT / env["BIN_DIR"])
        self.bin_dir = env["BIN_DIR"]
        self.out_path = os.path.join(self.run_dir, "run.out")
        self.log = open(self.out_path, "w+")
        # SIGINT as a terminal's Ctrl-C finds it: a shell started with SIGINT ignored (a test run
        # started in the background) cannot trap it, and run.sh would never see the Ctrl-C.
        self.proc = subprocess.Popen(
            ["bash", str(REPO_ROOT / "deploy" / "run.sh")], env=env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.api = f"http://localhost:{self.ports['USER_API_PORT']}"
        self.copy = f"http://localhost:{self.ports['NOTIFICATION_CONSUMER_PORT']}"
        self.relay = f"http://localhost:{self.ports['OUTBOX_RELAY_PORT']}"
        self.rc = None

    def output(self) -> str:
        return open(self.out_path).read()

    def wait_ready(self):
        def up():
            assert self.proc.poll() is None, self.output()[-3000:]
            try:
                return all(requests.get(u + "/readyz", timeout=1).status_code == 200
                           for u in (self.api, self.copy, self.relay))
            except requests.RequestException:
                return False
        wait_for(up, timeout=120, interval=0.5, what="the stack of deploy/run.sh to be ready")
        # The block comes once the services answer /healthz, which can be after /readyz.
        wait_for(lambda: "Ctrl-C stops everything" in self.output(), timeout=20, interval=0.2,
                 what="deploy/run.sh's block of what is where")

    def stop(self) -> int:
        """Ctrl-C; the status of run.sh."""
        if self.rc is None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.rc = self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self.rc = "killed: still running 40 s after SIGINT"
        return self.rc

    def close(self):
        self.stop()
        self.log.close()
        subprocess.run(["rm", "-rf", self.run_dir])


@pytest.fixture(scope="module")
def stack():
    st = Stack()
    try:
        st.wait_ready()
        yield st
    finally:
        st.close()


def where_block(out: str) -> list[str]:
    """The lines of run.sh's block of what is where, its title first."""
    lines = out.splitlines()
    i = lines.index("run: ready:")
    block = [lines[i]]
    for line in lines[i + 1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


def test_make_run_says_what_is_where(stack):
    """One short block: the three services' addresses and NATS's monitoring page (each answers),
    where the data and the logs are, how to stop and wipe."""
    p = stack.ports
    block = where_block(stack.output())
    text = "\n".join(block)
    assert len(block) <= 10, text
    urls = {
        "user-api": f"http://127.0.0.1:{p['USER_API_PORT']}/users",
        "notification-consumer": f"http://127.0.0.1:{p['NOTIFICATION_CONSUMER_PORT']}/notifications",
        "outbox-relay": f"http://127.0.0.1:{p['OUTBOX_RELAY_PORT']}/metrics",
        "NATS monitoring": f"http://127.0.0.1:{p['NATS_MONITOR_PORT']}",
    }
    for what, url in urls.items():
        assert re.search(rf"^  {re.escape(what)} +{re.escape(url)}$", text, re.M), (what, text)
        assert requests.get(url, timeout=5).status_code == 200, url
    data = next(line for line in block if line.split()[0] == "data")
    assert f"{stack.run_dir}/" in data and "kept across restarts" in data, text
    logs = next(line for line in block if line.split()[0] == "logs")
    assert f"{stack.run_dir}/logs/<name>.log" in logs, text
    for name in ("user-api", "outbox-relay", "notification-consumer", "nats", "postgres", "ferretdb"):
        assert os.path.getsize(os.path.join(stack.run_dir, "logs", f"{name}.log")) > 0, name
    stop = next(line for line in block if line.split()[0] == "stop")
    assert "Ctrl-C" in stop and "make clean-data" in stop, text


def test_make_run_serves_the_readme_curl_examples(stack):
    ports = stack.ports
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
        r = requests.get(stack.copy + "/notifications/user/1", timeout=2)
        return r.json() if r.status_code == 200 and r.json().get("version") == 2 else None
    doc = wait_for(mirrored, timeout=30, interval=0.2, what="user 1 at version 2 in the copy")
    assert {k: doc[k] for k in ("user_id", "name", "email", "updated_at")} == {
        "user_id": 1, "name": "John Doe Updated", "email": "john.updated@example.com",
        "updated_at": updated["updated_at"]}
    listing = requests.get(stack.copy + "/notifications", timeout=2).json()
    assert [d["user_id"] for d in listing] == [1]
    # make run's nats-server syncs every write (deploy/nats-server.conf)
    varz = requests.get(f"http://127.0.0.1:{ports['NATS_MONITOR_PORT']}/varz", timeout=2).json()
    assert varz["jetstream"]["config"]["sync_always"] is True
    check_env_files(stack.run_dir, ports, stack.bin_dir)


# --- the demo's debugging commands -----------------------------------------------------------------

def readme_blocks(title):
    """The ```sh blocks of the README's section `## title`."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", readme[start:end if end > 0 else None], re.S)


class Shell:
    """Runs the README's commands as a user would from the top of a checkout: a folder whose .run
    is the stack's and .tools the repository's, a home of its own (the NATS CLI's contexts, mongosh's
    history), no NATS_*, PG* or MONGO* settings of the test run, and the README's `export` lines
    first. The README's ports are replaced by the stack's."""

    def __init__(self, stack, tmp, exports):
        self.stack = stack
        self.cwd = tmp / "checkout"
        self.cwd.mkdir()
        (self.cwd / ".run").symlink_to(stack.run_dir)
        (self.cwd / ".tools").symlink_to(REPO_ROOT / ".tools")
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("NATS_", "PG", "MONGO", "XDG_"))}
        # The NATS CLI finds its folders from the password database, not HOME: the XDG settings
        # keep it out of the real home.
        home = tmp / "home"
        home.mkdir()
        self.env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                        XDG_DATA_HOME=str(home / ".local" / "share"))
        self.prelude = "\n".join(exports) + "\n"
        for tool in ("nats", "mongosh"):
            assert os.access(REPO_ROOT / ".tools" / "bin" / tool, os.X_OK), \
                f".tools/bin/{tool} is missing: run deploy/bootstrap.sh (make run and make test do)"

    def local(self, cmd):
        p = self.stack.ports
        for readme, ours in (("127.0.0.1:4222", f"127.0.0.1:{p['NATS_PORT']}"),
                             ("-p 5432", f"-p {p['POSTGRES_PORT']}"),
                             ("localhost:27017", f"localhost:{p['MONGODB_PORT']}")):
            cmd = cmd.replace(readme, ours)
        return cmd

    def run(self, cmd, timeout=60):
        r = subprocess.run(["bash", "-c", self.prelude + self.local(cmd)], cwd=self.cwd, env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"{cmd}\nstatus {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def start(self, cmd, out_path):
        with open(out_path, "w") as out:
            return subprocess.Popen(["bash", "-c", self.prelude + self.local(cmd)], cwd=self.cwd,
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def run_in_terminal(self, cmd, timeout=60):
        """CMD on a pseudo-terminal (`nats stream view` pages only on one); answers no to "Next
        Page?"."""
        master, slave = os.openpty()
        p = subprocess.Popen(["bash", "-c", self.prelude + self.local(cmd)], cwd=self.cwd,
                             env=dict(self.env, TERM="dumb", COLUMNS="200"), stdin=slave,
                             stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        out, answered, deadline = b"", False, time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if select.select([master], [], [], 0.2)[0]:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:   # EIO: the command has closed the terminal
                        chunk = b""
                    if not chunk:
                        break
                    out += chunk
                    if not answered and b"Next Page?" in out:
                        os.write(master, b"n\r")
                        answered = True
                elif p.poll() is not None:
                    break
            else:
                raise AssertionError(f"{cmd} still runs after {timeout} s:\n{out.decode(errors='replace')}")
            rc = p.wait(timeout=10)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            os.close(master)
        text = out.decode(errors="replace")
        assert rc == 0, f"{cmd}\nstatus {rc}\n{text}"
        return text


def by_program(cmds, *words):
    found = [c for c in cmds if c.split()[:len(words)] == list(words)]
    assert len(found) == 1, (words, cmds)
    return found[0]


async def publish_poison(port, password):
    nc = await nats.connect(f"nats://127.0.0.1:{port}", user="admin", password=password)
    try:
        await nc.jetstream().publish("user.events.created", b"this is not an event",
                                     headers={"Nats-Msg-Id": "readme-poison-1"})
    finally:
        await nc.close()


def test_the_readme_debugging_commands_work(stack, tmp_path):
    """The demo's nats sub, psql and mongosh, and the nats commands on the stream, the consumer
    and the DLQ, exactly as the README writes them, show what a user looks for."""
    blocks = readme_blocks("The demo's debugging commands")
    assert len(blocks) == 2, blocks
    demo, jetstream = (split_commands(b) for b in blocks)
    sh = Shell(stack, tmp_path, [c for c in demo if c.startswith("export ")])
    sub = by_program(demo, "nats", "sub")
    assert sub == 'nats sub "user.events.>"'   # the subject a demo user types, with its wildcard

    sh.run(by_program(demo, "nats", "context", "save"))

    # nats sub: a user created while it runs arrives on user.events.created.
    sub_out = tmp_path / "sub.out"
    proc = sh.start(sub, sub_out)
    try:
        wait_for(lambda: "Subscribing on user.events.>" in sub_out.read_text(), timeout=30,
                 what=f"{sub} to subscribe: {sub_out.read_text()}")
        r = requests.post(stack.api + "/users", json={"name": "Ada Debug", "email": "ada@example.com"},
                          timeout=5)
        assert r.status_code == 201, r.text
        user = r.json()
        wait_for(lambda: "ada@example.com" in sub_out.read_text(), timeout=30,
                 what=f"the event of the new user in the output of {sub}: {sub_out.read_text()}")
        text = sub_out.read_text()
        assert 'Received on "user.events.created"' in text, text
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=10)

    out = sh.run(by_program(demo, "psql"))
    assert re.search(r"^\s*id\s*\|\s*name\s*\|\s*email\b", out, re.M), out
    assert re.search(rf"^\s*{user['id']}\s*\|\s*Ada Debug\s*\|\s*ada@example.com\s*\|", out, re.M), out

    # mongosh, once the copy has the user.
    assert requests.get(f"{stack.copy}/notifications/user/{user['id']}?min_version=1",
                        timeout=10).status_code == 200
    out = sh.run(by_program(demo, "mongosh"))
    assert "ada@example.com" in out and "user_id" in out, out

    # A poison event for the DLQ to show (published as admin, as a bug in a publisher would).
    password = (pathlib.Path(stack.run_dir) / "nats-auth" / "admin.password").read_text().strip()
    asyncio.run(publish_poison(stack.ports["NATS_PORT"], password))

    def dlq_holds_it():
        out = sh.run("nats stream info USER_EVENTS_DLQ --json")
        return json.loads(out)["state"]["messages"] == 1
    wait_for(dlq_holds_it, timeout=30, interval=0.5, what="the poison event in USER_EVENTS_DLQ")

    assert len(jetstream) == 5, jetstream
    for cmd in jetstream:
        words = cmd.split()
        if words[:3] == ["nats", "stream", "view"]:
            out = sh.run_in_terminal(cmd)
        else:
            out = sh.run(cmd)
        target = words[3:]
        if words[1:3] == ["stream", "info"] and target == ["USER_EVENTS"]:
            assert "Information for Stream USER_EVENTS" in out and "user.events.>" in out, out
        elif words[1:3] == ["consumer", "info"]:
            assert target == ["USER_EVENTS", "notification-consumer"], cmd
            assert "notification-consumer" in out and "Unprocessed Messages: 0" in out, out
        elif words[1:3] == ["stream", "view"] and target == ["USER_EVENTS"]:
            assert "Subject: user.events.created" in out and "ada@example.com" in out, out
        elif words[1:3] == ["stream", "info"] and target == ["USER_EVENTS_DLQ"]:
            assert "Information for Stream USER_EVENTS_DLQ" in out and "Messages: 1" in out, out
        elif words[1:3] == ["stream", "view"] and target == ["USER_EVENTS_DLQ"]:
            assert "Subject: dlq.user.events.created" in out and "Dlq-Reason" in out, out
            assert "this is not an event" in out, out
        else:
            raise AssertionError(f"a command the test does not know: {cmd}")


def alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_ctrl_c_stops_everything_make_run_started(stack):
    pids = {f.stem: int(f.read_text()) for f in pathlib.Path(stack.run_dir, "pids").glob("*.pid")}
    assert set(pids) == {"postgres", "nats", "ferretdb-pg", "ferretdb", "user-api", "outbox-relay",
                         "notification-consumer"}, pids
    rc = stack.stop()
    out = stack.output()
    assert rc == 0, f"deploy/run.sh ended with {rc} after Ctrl-C:\n{out[-3000:]}"
    assert not [n for n, pid in pids.items() if alive(pid)], out[-3000:]
    assert not list(pathlib.Path(stack.run_dir, "pids").glob("*.pid"))
    assert "\nrun: stopped\n" in out, out[-3000:]
    # Without API_TOKENS_FILE the demo's curl examples work unauthenticated, and run.sh says so.
    assert "no API_TOKENS_FILE: the APIs answer anyone without a token, on 127.0.0.1 only" in out, \
        out[-3000:]
