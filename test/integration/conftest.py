"""Fixtures of the integration tests: servers on free ports in temporary folders, one set per test,
all killed at teardown whether the test passed or not. See harness.py for the classes.

  repo_root  the repository's root (Path), session-wide
  pg         a fresh PostgreSQL with an empty users_db (harness.Postgres)
  db         a fresh PostgreSQL whose users_db bin/migrate up has migrated; fails if bin/migrate
             is not built. Copied from a template migrated once per session, so it is fast.
  nats       a fresh nats-server with JetStream (harness.Nats)
  ferret     a fresh FerretDB on PostgreSQL: a database of its own on the session's FerretDB store
             (harness.FerretDB, harness.ferretdb_store)
  services   a factory: services.start("user-api", env, args=...) -> harness.Service, stopped
             (killed) at teardown
"""
import signal

import pytest

import harness


def pytest_configure(config):
    # SIGTERM (a CI timeout, a Ctrl-C through make) ends the run like Ctrl-C does, so fixture
    # teardown and the harness's atexit hook kill what the tests started.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def repo_root():
    return harness.REPO_ROOT


def _started(obj):
    try:
        obj.start()
    except BaseException:
        obj.close()
        raise
    return obj


@pytest.fixture
def pg():
    p = _started(harness.Postgres())
    yield p
    p.close()


@pytest.fixture(scope="session")
def migrated_template():
    if not harness.have_binary("migrate"):
        pytest.fail(f"{harness.bin_dir() / 'migrate'} is not built: make")
    return harness.Postgres.template(migrated=True)


@pytest.fixture
def db(migrated_template):
    p = _started(harness.Postgres(template=migrated_template))
    yield p
    p.close()


@pytest.fixture
def nats():
    n = _started(harness.Nats())
    yield n
    n.close()


@pytest.fixture
def ferret():
    f = _started(harness.FerretDB())
    yield f
    f.close()


class Services:
    """Starts the project's binaries for one test and kills them at its end."""

    def __init__(self):
        self.started = []

    def start(self, name, env=None, args=(), wait=True, **kw) -> harness.Service:
        s = harness.Service(name, env, args, **kw)
        self.started.append(s)
        return s.start(wait=wait)

    def close(self):
        for s in self.started:
            s.close()


@pytest.fixture
def services():
    s = Services()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_sanitizer_reports():
    """On a sanitizer build (make test-san), the log of every service a test started is scanned
    when it is closed, and the output of run_binary(): a report fails the test."""
    yield
    found = list(harness.sanitizer_findings)
    harness.sanitizer_findings.clear()
    if found:
        pytest.fail("sanitizer reports:\n" + "\n\n".join(found), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    # Services of module-scoped fixtures are closed after their last test's check above.
    if harness.sanitizer_findings:
        print("\nsanitizer reports after the last test of a module:\n"
              + "\n\n".join(harness.sanitizer_findings))
        session.exitstatus = 1


def _processes(item):
    for v in getattr(item, "funcargs", {}).values():
        if isinstance(v, harness.Process):
            yield v
        elif isinstance(v, Services):
            yield from v.started


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    # A failed test shows the last lines of every log of the processes it had.
    if rep.when == "call" and rep.failed:
        for p in _processes(item):
            tail = p.log_tail(30)
            if tail:
                rep.sections.append((f"log of {p.name} ({p.log_path})", tail))
