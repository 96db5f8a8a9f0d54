"""shellcheck reports nothing in the project's shell scripts: every file of deploy/, bench/ and test/
(and .ci/run) that is named *.sh or starts with a shell's #!. A warning that is wrong is silenced
where it occurs, with `# shellcheck disable=SCnnnn` and the reason, never for a whole file.
bootstrap installs shellcheck (Debian's package), so a missing one fails the test."""
import pathlib
import re
import shutil
import subprocess

from harness import REPO_ROOT

SHEBANG = re.compile(rb"^#!\s*(/usr/bin/env\s+)?(/bin/|/usr/bin/)?(ba|da|k)?sh\b")


def shell_scripts() -> list[str]:
    found = [".ci/run"]
    for top in ("deploy", "bench", "test"):
        for path in sorted((REPO_ROOT / top).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            if path.suffix == ".sh":
                found.append(str(path.relative_to(REPO_ROOT)))
                continue
            with open(path, "rb") as f:
                if SHEBANG.match(f.read(64)):
                    found.append(str(path.relative_to(REPO_ROOT)))
    return found


def test_the_shell_scripts_are_found():
    scripts = shell_scripts()
    for s in ("deploy/bootstrap.sh", "deploy/lib.sh", "deploy/infra.sh", "deploy/run.sh",
              "bench/run.sh", "test/run.sh", "test/fuzz/run.sh", ".ci/run"):
        assert s in scripts, scripts


def test_shellcheck_reports_nothing():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: run deploy/bootstrap.sh (make test does), which installs it"
    # -x follows the `# shellcheck source=` of each script, from the root of the checkout.
    r = subprocess.run([shellcheck, "-x", "--format=gcc", *shell_scripts()], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and not r.stdout, r.stdout + r.stderr
