"""deploy/bootstrap.sh decides what to install from what the system's tools answer. These tests
put stubs of those tools first on PATH (dpkg-query answering as the real one does, apt-get
recording what it is asked, go reporting a version) and check what bootstrap then asks for.

The stub dpkg-query keeps a list of installed packages in a file; the stub apt-get adds to it on
`install`, so bootstrap's check after installing sees what a real machine would, and puts the
commands a package brings (provides/<package>/) on PATH. PATH holds the stubs and the machine's
/usr/bin and /bin without node, npm and go, so that a test decides which of them exist.
"""
from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

DPKG_QUERY = r"""#!/bin/bash
# Answers like dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' PKG...: a line for each known
# package, "no packages found matching" on stderr and status 1 for each unknown one.
rc=0
for a in "$@"; do
	case $a in -*) continue ;; esac
	if grep -qxF -- "$a" "$STUB_DIR/installed"; then printf '%s ii \n' "$a"
	else echo "dpkg-query: no packages found matching $a" >&2; rc=1; fi
done
exit $rc
"""

APT_GET = r"""#!/bin/bash
printf '%s\n' "$*" >>"$STUB_DIR/apt-get.calls"
cmd=
for a in "$@"; do case $a in update|install) cmd=$a; break ;; esac; done
case "$cmd:${STUB_APT_FAIL:-}" in
update:network) echo "E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving 'deb.debian.org'" >&2; exit 100 ;;
install:lock) echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)" >&2; exit 100 ;;
install:half) exit 0 ;;
esac
if [[ $cmd == install ]]; then
	for a in "$@"; do
		case $a in -*|install|-o|DPkg::*|Dpkg::*) continue ;; esac
		[[ $a == *=* ]] && continue
		printf '%s\n' "$a" >>"$STUB_DIR/installed"
		[[ -d $STUB_DIR/provides/$a ]] && cp -p "$STUB_DIR/provides/$a"/* "$STUB_DIR/stubs/"
	done
fi
exit 0
"""


def want_packages() -> list[str]:
    """The packages bootstrap wants, read from the script itself, plus python3-venv (Debian's
    python3 is on this machine)."""
    out = subprocess.run(
        ["bash", "-c", '. deploy/bootstrap.sh; printf "%s\\n" "${APT_PKGS[@]}"'],
        cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert "libnats-dev" in out and "wrk" in out, out
    assert "clang" in out and "libclang-rt-14-dev" in out, out   # the fuzz targets (test/fuzz/)
    assert "prometheus" in out, out   # promtool, for deploy/observability/
    assert "shellcheck" in out, out   # test_shellcheck.py
    return out + ["python3-venv"]


def ci_purged_packages() -> list[str]:
    """The packages .ci/run removes before make test, from its apt-get purge command."""
    text = (REPO / ".ci" / "run").read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if "apt-get" in l and " purge " in l)
    words = line.split(" purge ", 1)[1].split()
    return [w for w in words if not w.startswith(("-", ">", "2>"))]


def pins() -> dict[str, str]:
    """The pinned versions of deploy/lib.sh."""
    out = subprocess.run(["bash", "-c", ". deploy/lib.sh; echo $NATSCLI_MODULE $NATSCLI_VERSION "
                          "$MONGOSH_VERSION"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    return dict(zip(("natscli_module", "natscli", "mongosh"), out))


# Commands a test decides about: they are left out of the machine's folders on PATH.
HIDDEN = {"node", "nodejs", "npm", "npx", "corepack", "go", "gofmt"}


@pytest.fixture(scope="session")
def system_bin(tmp_path_factory) -> pathlib.Path:
    """/usr/bin and /bin as links in one folder, without the commands of HIDDEN."""
    d = tmp_path_factory.mktemp("system-bin")
    for src in ("/usr/bin", "/bin"):
        for name in sorted(os.listdir(src)):
            if name not in HIDDEN and not (d / name).exists() and not (d / name).is_symlink():
                (d / name).symlink_to(os.path.join(src, name))
    return d


@pytest.fixture
def stubs(tmp_path, system_bin):
    (tmp_path / "system-bin").symlink_to(system_bin)
    d = tmp_path / "stubs"
    d.mkdir()
    (tmp_path / "installed").write_text("")
    for name, body in {"dpkg-query": DPKG_QUERY, "apt-get": APT_GET,
                       # never touch the machine's own clusters from a test
                       "pg_lsclusters": "#!/bin/sh\nexit 0\n"}.items():
        (d / name).write_text(body)
        (d / name).chmod(0o755)
    return tmp_path


def run_step(tmp: pathlib.Path, step: str, env_extra: dict | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("GO", "PYTHON", "GOBIN")}
    env.update(PATH=f"{tmp / 'stubs'}:{tmp / 'system-bin'}", STUB_DIR=str(tmp),
               PYTHON="/usr/bin/python3")
    # Never look at this machine's own prometheus service (the step that stops the one the
    # package starts): no systemd and no init script, unless a test makes them.
    env.update(SYSTEMD_RUN_DIR=str(tmp / "no-systemd"), PROMETHEUS_INIT=str(tmp / "no-init-script"))
    env.update(env_extra or {})
    script = (f'. deploy/bootstrap.sh; APT_LOG={tmp}/apt.log; TOOLS_DIR={tmp}/tools; '
              f'GO_LOG=$TOOLS_DIR/go-build.log; NPM_LOG=$TOOLS_DIR/npm.log; mkdir -p $TOOLS_DIR/bin; '
              f'GO_WANTED=; {step}')
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def installs(tmp: pathlib.Path) -> list[list[str]]:
    """The package lists of every `apt-get install` call."""
    calls = (tmp / "apt-get.calls").read_text().splitlines() if (tmp / "apt-get.calls").exists() else []
    out = []
    for c in calls:
        words = c.split()
        if "install" in words:
            rest = words[words.index("install") + 1:]
            out.append([w for w in rest if not w.startswith("-")])
    return out


def test_a_machine_where_dpkg_knows_none_of_the_packages_gets_all_of_them(stubs):
    want = want_packages()
    r = run_step(stubs, "packages_step")
    assert r.returncode == 0, r.stderr
    assert installs(stubs) == [want]
    assert "installed Debian packages: " + " ".join(want) in r.stdout
    # apt-get update first, then install
    calls = (stubs / "apt-get.calls").read_text().splitlines()
    assert "update" in calls[0].split() and "install" in calls[1].split()


def test_a_machine_where_dpkg_knows_some_gets_exactly_the_rest(stubs):
    want = want_packages()
    have = [p for p in want if p not in ("libnats-dev", "libmicrohttpd-dev", "wrk")]
    (stubs / "installed").write_text("\n".join(have) + "\n")
    r = run_step(stubs, "packages_step")
    assert r.returncode == 0, r.stderr
    assert installs(stubs) == [["libnats-dev", "libmicrohttpd-dev", "wrk"]]
    assert "installed Debian packages: libnats-dev libmicrohttpd-dev wrk" in r.stdout


def test_what_ci_removes_is_installed_again_and_nothing_else(stubs):
    """CI purges some packages so that every run takes the real install path (.ci/run): bootstrap
    must want each of them, and on a machine that lacks only those, install exactly those."""
    purged = ci_purged_packages()
    assert "clang" in purged and "libclang-rt-14-dev" in purged, purged
    assert "shellcheck" in purged, purged
    want = want_packages()
    assert set(purged) <= set(want), set(purged) - set(want)
    (stubs / "installed").write_text("\n".join(p for p in want if p not in purged) + "\n")
    r = run_step(stubs, "packages_step")
    assert r.returncode == 0, r.stderr
    assert installs(stubs) == [[p for p in want if p in purged]]


SYSTEMCTL = r"""#!/bin/bash
printf '%s\n' "$*" >>"$STUB_DIR/systemctl.calls"
exit 0
"""

INIT_SCRIPT = r"""#!/bin/bash
printf '%s\n' "$*" >>"$STUB_DIR/init.calls"
exit 0
"""


def test_the_prometheus_server_the_package_starts_is_stopped_and_disabled(stubs):
    """Debian's prometheus (wanted for promtool) starts a server on port 9090 when installed: with
    systemd, bootstrap disables and stops the unit; with an init script, it stops the script's
    server and keeps it from starting at boot. Only right after installing the package."""
    (stubs / "systemd").mkdir()
    (stubs / "stubs" / "systemctl").write_text(SYSTEMCTL)
    (stubs / "stubs" / "systemctl").chmod(0o755)
    want = want_packages()
    assert "prometheus" in want
    (stubs / "installed").write_text("\n".join(p for p in want if p != "prometheus") + "\n")
    r = run_step(stubs, "packages_step", {"SYSTEMD_RUN_DIR": str(stubs / "systemd")})
    assert r.returncode == 0, r.stderr
    assert installs(stubs) == [["prometheus"]]
    assert "disable --now prometheus.service" in (stubs / "systemctl.calls").read_text()
    assert "stopping and disabling the prometheus service" in r.stderr + r.stdout

    # Without systemd: the init script.
    init = stubs / "prometheus.init"
    init.write_text(INIT_SCRIPT)
    init.chmod(0o755)
    (stubs / "stubs" / "update-rc.d").write_text(INIT_SCRIPT.replace("init.calls", "update-rc.d.calls"))
    (stubs / "stubs" / "update-rc.d").chmod(0o755)
    (stubs / "installed").write_text("\n".join(p for p in want if p != "prometheus") + "\n")
    r = run_step(stubs, "packages_step", {"PROMETHEUS_INIT": str(init)})
    assert r.returncode == 0, r.stderr
    assert (stubs / "init.calls").read_text().split() == ["status", "stop"]
    assert (stubs / "update-rc.d.calls").read_text().split() == ["prometheus", "disable"]

    # A prometheus that was already installed is left alone.
    for f in ("systemctl.calls", "init.calls"):
        (stubs / f).unlink()
    r = run_step(stubs, "packages_step", {"SYSTEMD_RUN_DIR": str(stubs / "systemd"),
                                          "PROMETHEUS_INIT": str(init)})
    assert r.returncode == 0, r.stderr
    assert not (stubs / "systemctl.calls").exists() and not (stubs / "init.calls").exists()


def test_a_machine_that_has_them_all_asks_apt_get_nothing(stubs):
    (stubs / "installed").write_text("\n".join(want_packages()) + "\n")
    r = run_step(stubs, "packages_step")
    assert r.returncode == 0, r.stderr
    assert not (stubs / "apt-get.calls").exists()
    assert "installing" not in r.stdout


def test_no_network_is_one_clear_error_that_names_the_command(stubs):
    r = run_step(stubs, "packages_step", {"STUB_APT_FAIL": "network"})
    assert r.returncode != 0
    assert "apt-get update failed" in r.stderr
    assert "apt-get install" in r.stderr and "libnats-dev" in r.stderr
    assert "Temporary failure resolving" in r.stderr  # apt's own reason is shown
    assert installs(stubs) == []


def test_a_held_dpkg_lock_is_named(stubs):
    r = run_step(stubs, "packages_step", {"STUB_APT_FAIL": "lock"})
    assert r.returncode != 0
    assert "dpkg lock" in r.stderr and "apt-get install" in r.stderr


def test_without_root_or_sudo_it_says_what_to_run_and_runs_nothing(stubs):
    d = stubs / "stubs"
    (d / "id").write_text("#!/bin/sh\necho 1000\n")
    (d / "sudo").write_text("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n")
    for n in ("id", "sudo"):
        (d / n).chmod(0o755)
    r = run_step(stubs, "packages_step")
    assert r.returncode != 0
    assert "needs root" in r.stderr
    assert "apt-get update && apt-get install" in r.stderr and "libjansson-dev" in r.stderr
    assert not (stubs / "apt-get.calls").exists()


def test_an_install_that_leaves_packages_missing_fails_and_the_next_run_tries_again(stubs):
    r = run_step(stubs, "packages_step", {"STUB_APT_FAIL": "half"})
    assert r.returncode != 0
    assert "still not installed" in r.stderr
    r = run_step(stubs, "packages_step")
    assert r.returncode == 0, r.stderr
    assert len(installs(stubs)) == 2 and installs(stubs)[1] == want_packages()


def fake_go(path: pathlib.Path, version: str, toolchain_dir: pathlib.Path | None = None):
    """A go that reports VERSION; `mod download -json` answers with TOOLCHAIN_DIR as Dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dl = ""
    if toolchain_dir is not None:
        dl = (f'[ "$1 $2" = "mod download" ] && {{ echo "{{"; '
              f'echo "\\t\\"Dir\\": \\"{toolchain_dir}\\","; echo "}}"; exit 0; }}\n')
    path.write_text(f'#!/bin/sh\n[ "$1 $2" = "env GOVERSION" ] && {{ echo {version}; exit 0; }}\n'
                    f'[ "$1" = version ] && {{ echo "go version {version} linux/amd64"; exit 0; }}\n'
                    f'{dl}exit 2\n')
    path.chmod(0o755)


def test_go_older_than_1_21_fetches_the_toolchain_module_and_uses_it(stubs):
    tc = stubs / "modcache" / "toolchain"
    fake_go(tc / "bin" / "go", "go1.26.8")
    (tc / "pkg" / "tool" / "linux_amd64").mkdir(parents=True)
    (tc / "pkg" / "tool" / "linux_amd64" / "compile").write_text("")
    (tc / "bin" / "go").chmod(0o444)  # the module cache has no execute bits
    fake_go(stubs / "stubs" / "go", "go1.19.8", toolchain_dir=tc)
    r = run_step(stubs, 'GO_PLACES= GO_OLD_PLACES=; go_find || go_toolchain_fetch; echo "GO=$GO $GO_VERSION"',
                 {"HOME": str(stubs)})
    assert r.returncode == 0, r.stderr
    assert f"GO={stubs}/tools/go/bin/go go1.26.8" in r.stdout
    assert "fetching the Go toolchain go1.26.8 with go1.19.8" in r.stdout
    assert os.access(stubs / "tools" / "go" / "bin" / "go", os.X_OK)
    assert os.access(stubs / "tools" / "go" / "pkg" / "tool" / "linux_amd64" / "compile", os.X_OK)


def test_a_go_of_1_21_or_newer_is_used_as_it_is(stubs):
    fake_go(stubs / "stubs" / "go", "go1.22.3")
    r = run_step(stubs, 'GO_PLACES= GO_OLD_PLACES=; go_find || go_toolchain_fetch; echo "GO=$GO $GO_VERSION"')
    assert r.returncode == 0, r.stderr
    assert f"GO={stubs}/stubs/go go1.22.3" in r.stdout
    assert "fetching" not in r.stdout


def test_no_go_at_all_installs_debians_go_to_fetch_the_toolchain(stubs):
    """With no go anywhere, bootstrap asks apt-get for golang-go; the stub installs nothing, so
    bootstrap must stop with a message instead of going on without Go."""
    r = run_step(stubs, 'GO_PLACES= GO_OLD_PLACES=; go_find || go_toolchain_fetch; echo "GO=$GO"',
                 {"STUB_APT_FAIL": "half"})
    assert r.returncode != 0
    assert installs(stubs) == [["golang-go"]]
    assert "golang-go" in r.stderr and "GO=" not in r.stdout


# --- the NATS CLI and mongosh --------------------------------------------------------------------

def script(path: pathlib.Path, body: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def fake_nats(path: pathlib.Path, version: str):
    script(path, f'[ "$1" = --version ] && {{ echo {version} >&2; exit 0; }}\nexit 1\n')


def builder_go(tmp: pathlib.Path, builds: str):
    """A Go 1.26 whose `go install MODULE@VERSION` records its call and writes a nats that reports
    BUILDS into $GOBIN."""
    script(tmp / "stubs" / "go",
           '[ "$1 $2" = "env GOVERSION" ] && { echo go1.26.8; exit 0; }\n'
           '[ "$1" = install ] && { echo "GOBIN=$GOBIN $*" >>"$STUB_DIR/go.calls"; '
           f'printf \'#!/bin/sh\\necho {builds}\\n\' >"$GOBIN/nats"; chmod +x "$GOBIN/nats"; exit 0; }}\n'
           'exit 2\n')


def go_calls(tmp: pathlib.Path) -> list[str]:
    f = tmp / "go.calls"
    return f.read_text().splitlines() if f.exists() else []


NATSCLI = 'GO=$STUB_DIR/stubs/go GO_VERSION=go1.26.8; natscli_step; echo "changed=$changed"'


def test_a_missing_nats_cli_is_built_with_go_install_and_a_second_run_builds_nothing(stubs):
    pin = pins()
    builder_go(stubs, pin["natscli"])
    r = run_step(stubs, NATSCLI, {"HOME": str(stubs)})
    assert r.returncode == 0, r.stderr
    assert go_calls(stubs) == [f"GOBIN={stubs}/tools/bin install {pin['natscli_module']}@{pin['natscli']}"]
    assert pin["natscli_module"] == "github.com/nats-io/natscli/nats" and pin["natscli"] == "v0.5.0"
    assert f"building the NATS CLI (nats) {pin['natscli']}" in r.stdout and "changed=1" in r.stdout
    r = run_step(stubs, NATSCLI, {"HOME": str(stubs)})
    assert r.returncode == 0, r.stderr
    assert len(go_calls(stubs)) == 1 and "changed=0" in r.stdout and "building" not in r.stdout


def test_a_nats_cli_of_another_version_is_built_again(stubs):
    pin = pins()
    fake_nats(stubs / "tools" / "bin" / "nats", "v0.4.0")
    builder_go(stubs, pin["natscli"])
    r = run_step(stubs, NATSCLI, {"HOME": str(stubs)})
    assert r.returncode == 0, r.stderr
    assert len(go_calls(stubs)) == 1 and "changed=1" in r.stdout


def test_a_pinned_nats_cli_in_the_go_bin_folder_is_copied_not_built(stubs):
    pin = pins()
    fake_nats(stubs / "go" / "bin" / "nats", pin["natscli"])
    builder_go(stubs, pin["natscli"])
    r = run_step(stubs, NATSCLI, {"HOME": str(stubs)})
    assert r.returncode == 0, r.stderr
    assert go_calls(stubs) == [] and "copied nats from" in r.stdout
    assert os.access(stubs / "tools" / "bin" / "nats", os.X_OK)


def test_a_failed_nats_cli_build_is_one_clear_error(stubs):
    script(stubs / "stubs" / "go", 'echo "go: github.com/nats-io/natscli/nats@v0.5.0: 410 Gone" >&2\nexit 1\n')
    r = run_step(stubs, NATSCLI, {"HOME": str(stubs)})
    assert r.returncode != 0
    assert "could not build the NATS CLI v0.5.0" in r.stderr and "410 Gone" in r.stderr


def fake_npm(tmp: pathlib.Path, fail: bool = False):
    """An npm whose `install --global --prefix P mongosh@V` records its call and lays out what the
    real one does: P/lib/node_modules/mongosh with its package.json, P/bin/mongosh a link."""
    script(tmp / "provides" / "npm" / "npm", (
        '[ "$1" = --version ] && { echo 9.2.0; exit 0; }\n'
        'echo "$*" >>"$STUB_DIR/npm.calls"\n'
        + ('echo "npm ERR! network request to https://registry.npmjs.org/mongosh failed" >&2; exit 1\n'
           if fail else '')
        + 'prefix= spec=\n'
        'while [ $# -gt 0 ]; do case $1 in --prefix) prefix=$2; shift ;; mongosh@*) spec=$1 ;; esac; shift; done\n'
        'm=$prefix/lib/node_modules/mongosh\n'
        'mkdir -p "$m/bin" "$prefix/bin"\n'
        'printf \'{\\n  "name": "mongosh",\\n  "version": "%s",\\n  "bin": {}\\n}\\n\' "${spec#mongosh@}" >"$m/package.json"\n'
        'printf \'#!/bin/sh\\n\' >"$m/bin/mongosh.js"; chmod +x "$m/bin/mongosh.js"\n'
        'ln -sf ../lib/node_modules/mongosh/bin/mongosh.js "$prefix/bin/mongosh"\n'))
    script(tmp / "provides" / "nodejs" / "node", '[ "$1" = --version ] && echo v18.20.4\n')


def have(tmp: pathlib.Path, *packages: str):
    """The commands of these packages are on PATH (installed by hand, or by NodeSource)."""
    for p in packages:
        for f in (tmp / "provides" / p).iterdir():
            (tmp / "stubs" / f.name).write_bytes(f.read_bytes())
            (tmp / "stubs" / f.name).chmod(0o755)


def npm_calls(tmp: pathlib.Path) -> list[str]:
    f = tmp / "npm.calls"
    return f.read_text().splitlines() if f.exists() else []


MONGOSH = 'mongosh_step; echo "changed=$changed"'


def test_a_missing_mongosh_is_installed_with_npm_into_tools_and_a_second_run_installs_nothing(stubs):
    """node and npm are there as NodeSource installs them (dpkg knows no npm package): bootstrap
    uses them and asks apt-get for nothing."""
    fake_npm(stubs)
    have(stubs, "nodejs", "npm")
    r = run_step(stubs, MONGOSH)
    assert r.returncode == 0, r.stderr
    assert npm_calls(stubs) == [f"install --global --prefix {stubs}/tools --no-audit --no-fund "
                                f"mongosh@{pins()['mongosh']}"]
    assert pins()["mongosh"] == "2.12.0"
    assert os.access(stubs / "tools" / "bin" / "mongosh", os.X_OK)
    assert "installing mongosh 2.12.0 with npm 9.2.0" in r.stdout and "changed=1" in r.stdout
    assert not (stubs / "apt-get.calls").exists()
    r = run_step(stubs, MONGOSH)
    assert r.returncode == 0, r.stderr
    assert len(npm_calls(stubs)) == 1 and "changed=0" in r.stdout and r.stderr == ""


def test_a_mongosh_of_another_version_is_installed_again(stubs):
    fake_npm(stubs)
    have(stubs, "nodejs", "npm")
    r = run_step(stubs, "mongosh_step")
    assert r.returncode == 0, r.stderr
    pkg = stubs / "tools" / "lib" / "node_modules" / "mongosh" / "package.json"
    pkg.write_text(pkg.read_text().replace(pins()["mongosh"], "2.3.0"))
    r = run_step(stubs, MONGOSH)
    assert r.returncode == 0, r.stderr
    assert len(npm_calls(stubs)) == 2 and "changed=1" in r.stdout


def test_without_node_and_npm_debians_nodejs_and_npm_are_installed_first(stubs):
    fake_npm(stubs)
    r = run_step(stubs, MONGOSH)
    assert r.returncode == 0, r.stderr
    assert installs(stubs) == [["nodejs", "npm"]]
    assert len(npm_calls(stubs)) == 1 and "changed=1" in r.stdout


def test_with_node_but_no_npm_only_npm_is_installed(stubs):
    fake_npm(stubs)
    have(stubs, "nodejs")
    r = run_step(stubs, MONGOSH)
    assert r.returncode == 0, r.stderr
    assert installs(stubs) == [["npm"]]
    assert len(npm_calls(stubs)) == 1


def test_a_failed_npm_install_is_one_clear_error(stubs):
    fake_npm(stubs, fail=True)
    have(stubs, "nodejs", "npm")
    r = run_step(stubs, MONGOSH)
    assert r.returncode != 0
    assert "could not install mongosh 2.12.0 with npm" in r.stderr
    assert "registry.npmjs.org/mongosh failed" in r.stderr   # npm's own reason is shown
