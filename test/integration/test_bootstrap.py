"""deploy/bootstrap.sh decides what to install from what the system's tools answer. These tests
put stubs of those tools first on PATH (dpkg-query answering as the real one does, apt-get
recording what it is asked, go reporting a version) and check what bootstrap then asks for.

The stub dpkg-query keeps a list of installed packages in a file; the stub apt-get adds to it on
`install`, so bootstrap's check after installing sees what a real machine would.
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
    assert "shellcheck" in out, out                                # test_shellcheck.py
    return out + ["python3-venv"]


def ci_purged_packages() -> list[str]:
    """The packages .ci/run removes before make test, from its apt-get purge command."""
    text = (REPO / ".ci" / "run").read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if "apt-get" in l and " purge " in l)
    words = line.split(" purge ", 1)[1].split()
    return [w for w in words if not w.startswith(("-", ">", "2>"))]


@pytest.fixture
def stubs(tmp_path):
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
    env = {k: v for k, v in os.environ.items() if k not in ("GO", "PYTHON")}
    env.update(PATH=f"{tmp / 'stubs'}:/usr/bin:/bin", STUB_DIR=str(tmp), PYTHON="/usr/bin/python3")
    env.update(env_extra or {})
    script = f'. deploy/bootstrap.sh; APT_LOG={tmp}/apt.log; TOOLS_DIR={tmp}/tools; mkdir -p $TOOLS_DIR; GO_WANTED=; {step}'
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
