"""The README and --help tell the same story: every setting a binary prints is documented."""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("BIN_DIR", os.path.join(ROOT, "bin"))
BINARIES = ["user-api", "outbox-relay", "notification-consumer", "migrate", "audit"]


def help_settings(binary):
    out = subprocess.run([os.path.join(ROOT, BIN_DIR, binary), "--help"], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    env = out[out.index("Environment"):]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+([A-Z][A-Z0-9_]+)\s.*\[(.*)\]$", env, re.M)}


@pytest.mark.parametrize("binary", BINARIES)
def test_every_setting_is_in_the_readme_with_its_default(binary):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    settings = help_settings(binary)
    assert settings, f"{binary} --help lists no settings"
    # A row in the binary's own section (### <binary>) wins: POSTGRES_USER's default is each
    # process's own role.
    start = readme.find(f"\n### {binary}\n")
    section = readme[start:readme.find("\n#", start + 1)] if start >= 0 else ""
    for name, default in settings.items():
        # An empty default is written "empty".
        pattern = r"^\| `%s` \| (?:`([^`]*)`|empty) \|" % re.escape(name)
        row = re.search(pattern, section, re.M) or re.search(pattern, readme, re.M)
        assert row, f"{name} of {binary} is not in the README's configuration table"
        assert (row.group(1) or "").strip() == default.strip(), \
            f"README says {name} defaults to {row.group(1)!r}, {binary} --help says {default!r}"


def test_readme_starts_with_the_two_commands():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    first_block = readme[readme.index("```"):readme.index("```", readme.index("```") + 3)]
    assert "make run" in first_block and "make test" in first_block


@pytest.mark.parametrize("binary", BINARIES)
def test_version_and_bad_option(binary):
    path = os.path.join(ROOT, BIN_DIR, binary)
    v = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    assert v.returncode == 0 and v.stdout.startswith(binary + " ")
    bad = subprocess.run([path, "--no-such-option"], capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "--help" in bad.stderr
