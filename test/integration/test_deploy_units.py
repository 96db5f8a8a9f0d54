"""The systemd units of deploy/systemd (README, "Deploying with systemd"): `systemd-analyze verify`
accepts them with the built binaries at their ExecStart (and refuses a broken one), their
exposure score stays low, every unit carries the sandboxing and the settings the README promises,
and `make install` lays out binaries, migrations, units and users as the units expect.

The verify test needs systemd-analyze (Debian: the systemd package); it is the one test that skips
where it is missing (test/allowed-skips.txt). No running systemd is needed: verify reads the unit
files and checks that each ExecStart is an executable, so the units are copied with ExecStart
pointing at the built binaries."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import harness

UNITS = harness.REPO_ROOT / "deploy" / "systemd"
APPDIR = "/usr/local/lib/user-sync"
SERVICES = ["user-api", "outbox-relay", "notification-consumer"]
PROCESSES = ["migrate"] + SERVICES
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

# Every unit: (key, value) pairs that must be there, as the README lists them.
SANDBOX = [("DynamicUser", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
           ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"), ("PrivateDevices", "yes"),
           ("CapabilityBoundingSet", ""), ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
           ("SystemCallFilter", "@system-service"), ("MemoryDenyWriteExecute", "yes"),
           ("LockPersonality", "yes"), ("RestrictNamespaces", "yes"),
           ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"),
           ("ProtectKernelLogs", "yes"), ("ProtectControlGroups", "yes"), ("UMask", "0077"),
           ("Restart", "on-failure")]


def unit_file(process: str) -> Path:
    return UNITS / f"user-sync-{process}.service"


def directives(path: Path) -> dict[str, list[str]]:
    """Every Key=value of a unit file (all sections), each key with its values in order."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|min)?", value)
    assert m, value
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "min": 60, None: 1}[m.group(2)]


def units_for_verify(tmp_path: Path, bindir: Path) -> list[Path]:
    """The units copied to tmp_path with ExecStart pointing at the binaries in bindir."""
    out = []
    for src in sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.target")):
        dst = tmp_path / src.name
        dst.write_text(src.read_text().replace(f"{APPDIR}/bin", str(bindir.resolve())))
        out.append(dst)
    return out


def test_every_unit_is_sandboxed_and_reads_its_environment_file():
    for process in PROCESSES:
        d = directives(unit_file(process))
        for key, value in SANDBOX:
            assert value in d.get(key, []), f"{process}: {key}={value} missing, has {d.get(key)}"
        assert d["EnvironmentFile"] == [f"/etc/user-sync/{process}.env"], process
        assert d["User"] == [f"user-sync-{process}"], process
        assert seconds(d["RestartSec"][0]) >= 1, process
        exec_start = d["ExecStart"][0].split()
        assert exec_start[0] == f"{APPDIR}/bin/{process}", exec_start
        assert d["WantedBy"] == ["user-sync.target"], process
    m = directives(unit_file("migrate"))
    assert m["Type"] == ["oneshot"] and m["RemainAfterExit"] == ["yes"]
    assert m["ExecStart"] == [f"{APPDIR}/bin/migrate up"]
    for process in SERVICES:
        d = directives(unit_file(process))
        assert "user-sync-migrate.service" in " ".join(d["Requires"]), process
        assert "user-sync-migrate.service" in " ".join(d["After"]), process
        # Longer than the 10 s a drain may take (every *_DRAIN_TIMEOUT is capped at 9 s).
        assert seconds(d["TimeoutStopSec"][0]) >= 15, process
        reload = d.get("ExecReload", [])
        if process == "outbox-relay":
            assert reload == [], reload
        else:
            assert reload == ["/bin/kill -HUP $MAINPID"], (process, reload)
    target = directives(UNITS / "user-sync.target")
    assert set(" ".join(target["Wants"]).split()) == {f"user-sync-{p}.service" for p in PROCESSES}


@pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                    reason="systemd-analyze is not installed (Debian: the systemd package)")
def test_systemd_analyze_verify_accepts_the_units_and_their_exposure_is_low(tmp_path):
    for process in PROCESSES:
        assert harness.have_binary(process), f"{harness.bin_dir() / process} is not built: make"
    units = units_for_verify(tmp_path, harness.bin_dir())
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, units)],
                       capture_output=True, text=True, timeout=120)
    # Any line is a finding (an unknown key, a bad value, a missing executable): none may be there.
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", \
        (r.returncode, r.stdout, r.stderr)

    # The check is not blind: a misspelt key and a missing executable are reported.
    bad = tmp_path / "bad" / "user-sync-user-api.service"
    bad.parent.mkdir()
    api = next(u for u in units if u.name == "user-sync-user-api.service")
    bad.write_text(api.read_text().replace("ProtectSystem=", "ProtectSytem=")
                   .replace(str(harness.bin_dir().resolve()), "/nonexistent/bin"))
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert "ProtectSytem" in r.stderr and "/nonexistent/bin/user-api" in r.stderr, r.stderr
    assert r.returncode != 0

    # systemd 250 and later score the sandboxing offline: README gives the score.
    version = int(re.search(r"systemd (\d+)", subprocess.run(
        [SYSTEMD_ANALYZE, "--version"], capture_output=True, text=True).stdout).group(1))
    if version >= 250:
        services = [u for u in units if u.suffix == ".service"]
        r = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager",
                            *map(str, services)], capture_output=True, text=True, timeout=120)
        scores = dict(re.findall(r"Overall exposure level for (\S+): ([0-9.]+)", r.stdout))
        assert set(scores) == {u.name for u in services}, r.stdout + r.stderr
        assert all(float(s) <= 2.0 for s in scores.values()), scores


def test_make_install_lays_out_what_the_units_expect(tmp_path, pg):
    # The binaries under test (bin/, or the sanitizer build's bin-san/): no build here.
    programs = " ".join(str(harness.bin_dir() / p) for p in PROCESSES + ["audit"])
    r = subprocess.run(["make", "--no-print-directory", "install", f"DESTDIR={tmp_path}",
                        f"PROGRAMS={programs}"], cwd=harness.REPO_ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    app = tmp_path / APPDIR.lstrip("/")
    for p in PROCESSES + ["audit"]:
        assert (app / "bin" / p).stat().st_mode & 0o111, p
    sql = sorted(p.name for p in (harness.REPO_ROOT / "migrations").glob("*.sql"))
    assert sorted(p.name for p in (app / "migrations").iterdir()) == sql
    for src in list(UNITS.glob("*.service")) + list(UNITS.glob("*.target")):
        installed = tmp_path / "etc/systemd/system" / src.name
        assert installed.read_text() == src.read_text(), src.name
        assert installed.stat().st_mode & 0o777 == 0o644
    users = (tmp_path / "etc/sysusers.d/user-sync.conf").read_text()
    assert set(re.findall(r"^u (\S+)", users, re.M)) == {f"user-sync-{p}" for p in PROCESSES}

    # migrate finds the migrations installed beside it (the unit sets no MIGRATIONS_DIR).
    st = subprocess.run([str(app / "bin" / "migrate"), "status"],
                        env=harness.service_env(pg.env), capture_output=True, text=True, timeout=60)
    assert st.returncode == 0, st.stderr
    assert st.stdout.count("pending") == len(sql), st.stdout

    # Another PREFIX moves the ExecStart paths with it.
    r = subprocess.run(["make", "--no-print-directory", "install", f"DESTDIR={tmp_path}/p2",
                        "PREFIX=/opt/user-sync", f"PROGRAMS={programs}"], cwd=harness.REPO_ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    api = (tmp_path / "p2/etc/systemd/system/user-sync-user-api.service").read_text()
    assert "ExecStart=/opt/user-sync/lib/user-sync/bin/user-api\n" in api
