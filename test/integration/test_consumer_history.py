"""GET /notifications/user/{id}/events after a snapshot: each version once, the superseded
snapshot event only on request; and every subcommand of the binaries answers --help without
connecting anywhere."""
import subprocess
import sys
from pathlib import Path

import pytest
import requests

import harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))

from system import MONGO_DB, System  # noqa: E402


def built(name: str) -> str:
    """The path of one of the project's binaries; a binary that is not built fails the test."""
    assert harness.have_binary(name), f"{harness.bin_dir() / name} is not built: make"
    return str(harness.bin_dir() / name)


def test_a_snapshot_does_not_show_a_version_twice():
    """Create (version 1), update (version 2), `outbox-relay snapshot`: the snapshot's event for
    version 2 arrives after version 2 was applied, so it changes nothing and is recorded as
    superseded. The history lists versions 1 and 2 once each; ?include=superseded adds the
    snapshot, marked; an unknown include is a 400."""
    system = System().start()
    try:
        api, base = system.api_url, system.consumer_url()
        r = requests.post(api + "/users", json={"name": "Ada", "email": "ada@example.com"}, timeout=10)
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        r = requests.put(f"{api}/users/{uid}", json={"name": "Ada L", "email": "ada@example.com"},
                         timeout=10)
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        r = requests.get(f"{base}/notifications/user/{uid}?min_version=2", timeout=10)
        assert r.status_code == 200 and r.json()["version"] == 2, r.text

        snap = subprocess.run([str(harness.bin_dir() / "outbox-relay"), "snapshot"],
                              env=harness.service_env(system.pg.env), capture_output=True,
                              text=True, timeout=30)
        assert snap.returncode == 0, snap.stderr
        assert snap.stdout.split() == ["1", str(uid)], snap.stdout

        def entries():
            with system.ferret.client() as c:
                return list(c[MONGO_DB].user_notification_events.find({"user_id": uid}))
        harness.wait_for(lambda: len(entries()) == 3, 30, 0.2, "the snapshot event in the history")

        r = requests.get(f"{base}/notifications/user/{uid}/events", timeout=10)
        assert r.status_code == 200, r.text
        events = r.json()
        assert [(e["version"], e["type"]) for e in events] == [(1, "user_created"),
                                                               (2, "user_updated")], events
        assert not any(e["superseded"] for e in events), events
        assert [e["name"] for e in events] == ["Ada", "Ada L"], events
        instances = system.consumer_instances()
        assert all(instances.get(e["applied_by"]) == "consumer" for e in events), (events, instances)

        r = requests.get(f"{base}/notifications/user/{uid}/events?include=superseded", timeout=10)
        assert r.status_code == 200, r.text
        seen = sorted((e["version"], e["type"], e["superseded"]) for e in r.json())
        assert seen == [(1, "user_created", False), (2, "user_snapshot", True),
                        (2, "user_updated", False)], seen

        r = requests.get(f"{base}/notifications/user/{uid}/events?include=everything", timeout=10)
        assert r.status_code == 400, r.text
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert r.json()["field"] == "include" and "superseded" in r.json()["detail"], r.text
    finally:
        system.close()


# Every subcommand, with --help: usage on stdout, exit 0, nothing attempted. The servers named in
# the environment do not exist, so an attempt to connect would fail or hang.
SUBCOMMANDS = [
    ("outbox-relay", "snapshot", "Usage: outbox-relay snapshot"),
    ("notification-consumer", "replay", "Usage: notification-consumer replay"),
    ("migrate", "up", "Usage: migrate up"),
    ("migrate", "status", "Usage: migrate status"),
]


@pytest.mark.parametrize("binary,command,usage", SUBCOMMANDS, ids=[f"{b} {c}" for b, c, _ in SUBCOMMANDS])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_subcommand_takes_help(binary, command, usage, flag):
    path = built(binary)
    port = harness.free_port()
    env = harness.service_env({"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(port),
                               "NATS_URL": f"nats://127.0.0.1:{port}",
                               "MONGODB_URI": f"mongodb://127.0.0.1:{port}"})
    r = subprocess.run([path, command, flag], env=env,
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(usage), r.stdout
    assert r.stderr == "", r.stderr


@pytest.mark.parametrize("binary,command", [("outbox-relay", "snapshot"), ("migrate", "up")])
def test_an_unknown_subcommand_argument_points_to_help(binary, command):
    r = subprocess.run([built(binary), command, "--bogus"],
                       env=harness.service_env({}), capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert '"--bogus"' in r.stderr and "--help" in r.stderr, r.stderr
