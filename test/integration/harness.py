"""Starts real PostgreSQL, NATS (JetStream) and FerretDB servers and the project's binaries for the
integration tests, each on free ports in a temporary folder of its own, never touching the dev
stack in .run.

Tools are found by deploy/lib.sh (tools_find), as deploy/*.sh and bench/run.sh find them: PG_BIN /
NATS_SERVER / FERRETDB from the environment, then .tools/env.sh (written by deploy/bootstrap.sh),
then .tools/bin, PATH and /usr/lib/postgresql/<newest>/bin. The project's binaries come from $BIN_DIR (default bin/), so the
sanitizer build can be tested by pointing BIN_DIR at it. Tests that scan logs for sanitizer reports
take theirs from san_binary() (bin-san/, or $SAN_BIN_DIR), which refuses anything but a current
sanitizer build.

Every process is started in a session of its own and registered; close() (the fixtures call it)
and an atexit hook kill whatever is still running, so nothing outlives pytest.
"""
from __future__ import annotations

import atexit
import glob
import itertools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import requests
from psycopg import sql as pgsql

REPO_ROOT = Path(__file__).resolve().parents[2]
# The local stack's nats-server configuration (sync_interval: always); Nats(config=None) runs
# the server on its defaults instead, as the benchmark does to measure the difference.
NATS_CONFIG = REPO_ROOT / "deploy" / "nats-server.conf"
IS_ROOT = os.geteuid() == 0
# Keep the temporary folders (data, logs) after the test for a post-mortem.
KEEP_DIRS = os.environ.get("KEEP_TEST_DIRS", "") not in ("", "0")

# Variables of the dev stack that must not leak from the caller's shell into what tests start.
STACK_VARS = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
              "POSTGRES_SSLMODE", "POSTGRES_SSLROOTCERT", "POSTGRES_SSLCERT", "POSTGRES_SSLKEY",
              "PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY",
              "NATS_URL", "MONGODB_URI", "USER_API_PORT", "NOTIFICATION_CONSUMER_PORT",
              "OUTBOX_RELAY_PORT")
# ... and how a shell that sourced a service's settings authenticates to NATS.
STACK_VARS += ("NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_CREDS_FILE",
               "NATS_NKEY_SEED_FILE", "NATS_TLS", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY")

# The PostgreSQL login role of each binary (migrations/0008_roles.sql): a test's services run as
# these, never as the superuser (Service, run_binary and migrate swap the superuser's credentials
# for them), which proves the grants suffice. Each role's password on the test servers is
# role_password(role).
PG_ROLES = {"migrate": "user_sync_owner", "user-api": "user_sync_api",
            "outbox-relay": "user_sync_relay", "audit": "user_sync_audit"}


def role_password(role: str) -> str:
    return f"{role}-test-password"


def as_role(binary: str, env: dict) -> dict:
    """env for bin/<binary>: the superuser's credentials (Postgres.env) swapped for the binary's
    own role and its password. A test that sets another POSTGRES_USER or POSTGRES_PASSWORD on
    purpose keeps it."""
    role = PG_ROLES.get(Path(str(binary)).name)
    if role is None or env.get("POSTGRES_USER") != Postgres.USER \
            or env.get("POSTGRES_PASSWORD") != Postgres.PASSWORD:
        return env
    return {**env, "POSTGRES_USER": role, "POSTGRES_PASSWORD": role_password(role)}


# --- tools ---------------------------------------------------------------------------------------

def _exe(path) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


_TOOLS: dict | None = None


def tool(name: str) -> str:
    """PG_BIN, NATS_SERVER or FERRETDB; raises with what to do if it is missing."""
    v = tools()[name]
    if not v:
        raise RuntimeError(f"{name} not found (looked in the environment, .tools/env.sh, .tools/bin, "
                           f"PATH): run deploy/bootstrap.sh")
    return v


def tools() -> dict:
    """{'PG_BIN', 'NATS_SERVER', 'FERRETDB'}: paths found, None for one that is missing. Looked up
    once by deploy/lib.sh's tools_find, the project's one tool lookup, in this process's
    environment."""
    global _TOOLS
    if _TOOLS is not None:
        return _TOOLS
    r = subprocess.run(["bash", "-c", '. "$1" && tools_find && tools_print', "tools",
                        str(REPO_ROOT / "deploy" / "lib.sh")],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"deploy/lib.sh could not look the tools up (exit {r.returncode}): "
                           f"{r.stderr.strip()}")
    t = {"PG_BIN": None, "NATS_SERVER": None, "FERRETDB": None}
    for line in r.stdout.splitlines():
        name, _, value = line.partition("=")
        if name in t:
            t[name] = value or None
    _TOOLS = t
    return t


def bin_dir() -> Path:
    d = os.environ.get("BIN_DIR")
    if not d:
        return REPO_ROOT / "bin"
    return Path(d) if os.path.isabs(d) else REPO_ROOT / d


def have_binary(name: str) -> bool:
    return _exe(str(bin_dir() / name))


# --- the sanitizer build -------------------------------------------------------------------------

# What a sanitizer report starts with in a log (ASan, LSan, UBSan's "file:line: runtime error:").
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer:")
# The sources each binary is built from (with common/), to tell a sanitizer build that is older
# than its sources: `make san` would rebuild it.
_SOURCES = {"user-api": ("user-api",), "outbox-relay": ("outbox-relay",),
            "notification-consumer": ("notification-consumer",), "migrate": ("migrations",)}
_san_cache: dict = {}
_SESSION_START = time.time()


def sanitizer_build(path) -> bool:
    """Whether the executable at path was built with AddressSanitizer (make san): it links the
    ASan runtime, so its symbols name __asan_init."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _san_cache:
        with open(path, "rb") as f:
            _san_cache[key] = b"__asan_init" in f.read()
    return _san_cache[key]


def san_bin_dir() -> Path:
    """Where the tests that scan logs for sanitizer reports take the binaries from: $SAN_BIN_DIR,
    else $BIN_DIR when it holds a sanitizer build (make test-san), else bin-san/."""
    d = os.environ.get("SAN_BIN_DIR")
    if d:
        return Path(d) if os.path.isabs(d) else REPO_ROOT / d
    if sanitizer_build(bin_dir() / "user-api"):
        return bin_dir()
    return REPO_ROOT / "bin-san"


def san_binary(name: str) -> Path:
    """The sanitizer build of one of the project's binaries (san_bin_dir()/name). Raises when it is
    not built, is not a sanitizer build, or is older than one of its sources: a sanitizer scan
    of any other binary would pass without having checked anything. Sources edited after the
    tests started do not count: the build was current when the run began."""
    path = san_bin_dir() / name
    if not _exe(str(path)):
        raise RuntimeError(f"{path} is not built: make san")
    if not sanitizer_build(path):
        raise RuntimeError(f"{path} is not a sanitizer build (no __asan_init): make san, and point "
                           f"SAN_BIN_DIR at bin-san")
    built = path.stat().st_mtime
    for folder in ("common", *_SOURCES.get(name, ())):
        for src in (REPO_ROOT / folder).glob("*.[ch]"):
            try:
                changed = src.stat().st_mtime
            except OSError:
                continue
            if built < changed < _SESSION_START:
                raise RuntimeError(f"{path} is older than {src.relative_to(REPO_ROOT)}: make san")
    return path


def sanitizer_reports(binary, text: str) -> list[str]:
    """The lines of sanitizer reports in text, the log of binary. Raises when binary is not a
    sanitizer build, so that a scan can never pass for want of a sanitizer."""
    if not sanitizer_build(binary):
        raise RuntimeError(f"{binary} is not a sanitizer build: scanning its log for sanitizer "
                           f"reports would check nothing")
    return [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKERS)]


# Reports found in the output of sanitizer builds that Service.close() and run_binary() saw, with
# the lines that follow each (the stack); conftest fails the test that ran them and empties it.
sanitizer_findings: list[str] = []


def _collect_sanitizer_reports(binary, text: str, where: str):
    if not sanitizer_build(binary):
        return
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKERS):
            sanitizer_findings.append(f"{where}:\n" + "\n".join(lines[i:i + 40]))
            return


# --- ports and waiting ---------------------------------------------------------------------------

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this process has not handed
    out before. Picked below the kernel's ephemeral range, so outgoing connections (which take
    ports from that range) cannot grab it between now and the bind."""
    hi = _ephemeral_low() - 1
    for _ in range(1000):
        port = random.randint(20000, hi) if hi > 21000 else random.randint(10000, 19999)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(pred, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Calls pred() until it returns something truthy, which is returned; raises TimeoutError after
    timeout seconds, naming `what` and the last exception pred raised, if any."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}"
                               + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)


# --- processes -----------------------------------------------------------------------------------

_BIND_ERROR = re.compile(r"(?i)address already in use|could not bind|could not create any tcp")

_live: set = set()       # started and not yet reaped
_dirs: set = set()       # temporary folders to remove at exit


def _chown_pg(path: Path):
    if IS_ROOT:
        shutil.chown(path, "postgres", "postgres")


def _pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _start_time(pid: int) -> str | None:
    """The kernel's start time of pid, which tells a process from a later one with its pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _mark(path: Path, pid: int):
    """Writes "pid starttime" so that a later run can tell whether pid is still that process."""
    # Written aside and renamed, so that a concurrent sweep never reads it half-written.
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(f"{pid} {_start_time(pid)}\n")
        os.replace(tmp, path)
    except OSError:
        pass


def _marked_alive(path: Path) -> int | None:
    try:
        pid_s, st = path.read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == st and not _pid_gone(pid) else None


def _sweep_abandoned():
    """Removes the folders of earlier test runs that were killed before they could clean up
    (SIGKILL, a machine-level timeout), and kills the servers they left running: a folder whose
    .owner process is gone and whose .pid process is still the one started there. Folders kept
    with KEEP_TEST_DIRS have no .owner and are left alone."""
    for base in {"/tmp", tempfile.gettempdir()}:
        for d in glob.glob(os.path.join(base, "it-*")):
            owner = Path(d, ".owner")
            try:
                owner_pid = int(owner.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # no owner (kept folder), or one being written: not ours to judge
            if owner_pid == os.getpid() or _marked_alive(owner):
                continue
            pid = _marked_alive(Path(d, ".pid"))
            if pid:
                kids = _children(pid)
                for k in [pid, *kids]:
                    try:
                        os.kill(k, signal.SIGKILL)
                    except OSError:
                        pass
            shutil.rmtree(d, ignore_errors=True)
    # mongoc's shared-memory counters (/dev/shm/mongoc-<pid>) of processes that were SIGKILLed
    # before the consumer unlinked its segment at start: a new process that gets the same pid
    # finds it and warns on stderr.
    for f in glob.glob("/dev/shm/mongoc-*"):
        try:
            if _pid_gone(int(f.rsplit("-", 1)[1])):
                os.unlink(f)
        except (OSError, ValueError):
            pass


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


class Process:
    """One server or service process with its own temporary folder and log file.

    Subclasses set `name`, build the command in _argv() and say how readiness looks in _ready().
    """
    name = "process"
    stop_signal = signal.SIGTERM
    start_timeout = 30.0

    def __init__(self, dir: str | Path | None = None, tmp_base: str | None = None):
        if dir is None:
            dir = tempfile.mkdtemp(prefix=f"it-{self.name}-", dir=tmp_base)
            _dirs.add(str(dir))
            os.chmod(dir, 0o755)  # a server running as `postgres` must be able to traverse it
            if not KEEP_DIRS:
                _mark(Path(dir, ".owner"), os.getpid())
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.closed = False
        self._started_once = False
        self._ports_chosen_here = False

    # to override
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict | None:
        return None

    def _popen_kw(self) -> dict:
        return {}

    def _ready(self) -> bool:
        return True

    # lifecycle
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True, timeout: float | None = None):
        """Starts the process and, with wait, returns once it is ready. On a first start whose
        ports the caller did not choose, a port that another process took between free_port()
        and the bind is replaced by a new one and the start tried again."""
        for attempt in range(4):
            try:
                return self._start_once(wait, timeout)
            except RuntimeError:
                if attempt == 3 or self._started_once or not self._ports_chosen_here \
                        or not _BIND_ERROR.search(self.log_tail(10)):
                    raise
                self._repick_ports()
        raise AssertionError("unreachable")

    def _start_once(self, wait: bool, timeout: float | None):
        assert not self.running(), f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} start {self.name}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self._env(),
                                         start_new_session=True, **self._popen_kw())
        _live.add(self)
        _mark(self.dir / ".pid", self.proc.pid)
        if wait:
            self.wait_ready(timeout or self.start_timeout)
            self._started_once = True
        return self

    def _repick_ports(self):
        """Takes new free ports; servers whose ports free_port() chose override this."""

    def wait_ready(self, timeout: float | None = None):
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode} while "
                                   f"starting; last lines of {self.log_path}:\n{self.log_tail()}")
            try:
                ready = self._ready()
            except Exception:  # noqa: BLE001 - not ready yet
                ready = False
            # A server that lost its port to another one exits at once, while that other one may
            # already answer the readiness probe: give the exit a moment to show.
            if ready:
                time.sleep(0.05)
                if self.proc.poll() is None:
                    return self
                continue
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                self.kill()
                raise RuntimeError(f"{self.name} was not ready within {timeout or self.start_timeout}s; "
                                   f"last lines of {self.log_path}:\n{tail}")
            time.sleep(0.05)

    def _reap(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Asks the process to stop (stop_signal), waits up to timeout seconds, then SIGKILLs it.
        Returns its exit status (negative: the signal that ended it), None if never started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            if self._reap(timeout) is None:
                with open(self.log_path, "ab") as log:
                    log.write(f"--- harness: no exit within {timeout}s of {self.stop_signal.name}: "
                              f"SIGKILL\n".encode())
                self.kill()
        _live.discard(self)
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL, no chance to clean up; returns the exit status (-9)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        _live.discard(self)
        return self.proc.returncode

    def restart(self, **kw):
        self.stop()
        return self.start(**kw)

    def close(self):
        """Kills what runs and removes the folder (kept when KEEP_TEST_DIRS=1)."""
        if self.closed:
            return
        self.closed = True
        self.kill()
        if not KEEP_DIRS and str(self.dir) in _dirs:
            shutil.rmtree(self.dir, ignore_errors=True)
            _dirs.discard(str(self.dir))

    # logs
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} pid={self.pid} dir={self.dir}>"


def _cleanup_at_exit():
    for p in list(_live):
        try:
            p.kill()
        except Exception:  # noqa: BLE001
            pass
    if not KEEP_DIRS:
        for d in list(_dirs):
            shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_at_exit)
_sweep_abandoned()


# --- PostgreSQL ----------------------------------------------------------------------------------

class Postgres(Process):
    """A PostgreSQL server in its own folder: data in dir/data, unix socket in dir, TCP on
    127.0.0.1:port. Superuser `postgres` with password `postgres` (scram over TCP, trust on the
    socket), database users_db. A migrated one also has the roles of migrations/0008_roles.sql,
    each with the password role_password(role), and users_db belongs to user_sync_owner, as
    `make infra` sets it up.

    tls=(certificate file, key file) starts the server with ssl=on and copies of those files.

    Data folders are copied from a template made once per session (initdb takes seconds, a copy a
    fraction of one): template=None uses the plain one; pass Postgres.template(migrated=True) for
    one on which bin/migrate up has run. When root, the server runs as the `postgres` user.

    fsync=off and full_page_writes=off only: they lose data on an operating-system crash, which
    tests do not make. synchronous_commit stays on, so a kill -9 of the server loses no commit
    that was acknowledged, as guarantee 4 needs.
    """
    name = "postgres"
    stop_signal = signal.SIGINT   # fast shutdown
    start_timeout = 60.0
    USER = "postgres"
    PASSWORD = "postgres"
    DB = "users_db"

    _templates: dict = {}

    def __init__(self, template: str | Path | None = None, port: int | None = None,
                 settings: dict | None = None, dir=None, tls: tuple | None = None):
        # /tmp rather than $TMPDIR: the `postgres` user must reach the folder when we are root,
        # and the socket path (folder + /.s.PGSQL.<port>) must stay under 108 bytes.
        super().__init__(dir, tmp_base="/tmp")
        _chown_pg(self.dir)
        self._ports_chosen_here = port is None
        self.port = port or free_port()
        self.data = self.dir / "data"
        self.settings = {"fsync": "off", "full_page_writes": "off", **(settings or {})}
        self._template = Path(template) if template else None
        if tls:
            self.settings.update(ssl="on", **self._tls_files(*tls))

    def _tls_files(self, cert, key) -> dict:
        """Copies of the server's certificate and key where the server can read them (the key
        owned by the server's user, mode 0600, as PostgreSQL demands)."""
        names = {}
        for setting, src, mode in (("ssl_cert_file", cert, 0o644), ("ssl_key_file", key, 0o600)):
            dst = self.dir / f"server.{setting.split('_')[1]}"
            shutil.copyfile(src, dst)
            os.chmod(dst, mode)
            _chown_pg(dst)
            names[setting] = str(dst)
        return names

    # templates
    @classmethod
    def template(cls, migrated: bool = False) -> Path:
        """A stopped data folder for this session: initdb'd with users_db created, and with
        migrated=True also migrated by bin/migrate up. Made on first use."""
        key = "migrated" if migrated else "plain"
        if key in cls._templates:
            return cls._templates[key]
        if migrated:
            # As an existing database is upgraded: the superuser's migrate creates the roles and
            # hands them the schema; then the roles get their passwords, as `make infra` does.
            pg = Postgres(template=cls.template(False))
            pg.start()
            try:
                migrate(pg, superuser=True)
                pg.create_roles()
            finally:
                pg.stop()
        else:
            pg = Postgres()
            pg._initdb()
            pg.start()
            pg.sql(f"CREATE DATABASE {cls.DB}", dbname="postgres")
            pg.stop()
        pg.closed = True  # the folder now belongs to the template and goes at exit
        cls._templates[key] = pg.data
        return pg.data

    def _initdb(self):
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.PASSWORD + "\n")
        _chown_pg(pwfile)
        argv = [os.path.join(tool("PG_BIN"), "initdb"), "-D", str(self.data), "-U", self.USER,
                f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust",
                "--auth-host=scram-sha-256", "--no-sync"]
        r = subprocess.run(argv, capture_output=True, text=True, **self._popen_kw())
        pwfile.unlink()
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")

    def _prepare(self):
        if (self.data / "PG_VERSION").exists():
            return
        if self._template is None:
            self._template = Postgres.template(False)
        # cp -a keeps owner and modes (0700, owned by postgres)
        subprocess.run(["cp", "-a", str(self._template), str(self.data)], check=True)

    def _argv(self):
        argv = [os.path.join(tool("PG_BIN"), "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}"]
        for k, v in self.settings.items():
            argv += ["-c", f"{k}={v}"]
        return argv

    def _popen_kw(self):
        if IS_ROOT:
            return {"user": "postgres", "group": "postgres", "extra_groups": []}
        return {}

    def start(self, wait: bool = True, timeout: float | None = None):
        self._prepare()
        return super().start(wait, timeout)

    def _repick_ports(self):
        self.port = free_port()

    def _ready(self):
        # Ours, not some other server that holds the port: it names our data folder.
        with psycopg.connect(self.dsn_for("postgres"), connect_timeout=2) as c:
            return c.execute("SHOW data_directory").fetchone()[0] == str(self.data)

    def kill(self) -> int | None:
        """SIGKILL of the postmaster and of all its children, as a crash of the whole server would
        leave it: the next start runs crash recovery. (Backends are group leaders of their own,
        so killing the postmaster's group would miss them, and surviving backends would keep the
        old shared memory and stop a restart.)"""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            kids = _children(self.proc.pid)
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()
            deadline = time.monotonic() + 10
            while not all(_pid_gone(k) for k in kids) and time.monotonic() < deadline:
                time.sleep(0.02)
        _live.discard(self)
        return self.proc.returncode

    # roles
    def create_roles(self):
        """What `make infra` does as the superuser before migrate runs as user_sync_owner: the
        roles of migrations/0008_roles.sql (created when missing), each with its password
        role_password(role), and users_db owned by user_sync_owner."""
        with self.connect("postgres") as c:
            for role in PG_ROLES.values():
                name = pgsql.Identifier(role)
                if c.execute("SELECT FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                    c.execute(pgsql.SQL("CREATE ROLE {} LOGIN").format(name))
                c.execute(pgsql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    name, pgsql.Literal(role_password(role))))
            c.execute(f"ALTER DATABASE {self.DB} OWNER TO user_sync_owner")

    def env_for(self, binary: str) -> dict:
        """The settings with which bin/<binary> reaches this server as its own role."""
        return as_role(binary, self.env)

    def connect_as(self, role: str, dbname: str | None = None, **kw) -> psycopg.Connection:
        """A new autocommit connection as one of the roles of PG_ROLES; the caller closes it."""
        kw.setdefault("connect_timeout", 10)
        kw.setdefault("autocommit", True)
        return psycopg.connect(host="127.0.0.1", port=self.port, user=role,
                               password=role_password(role), dbname=dbname or self.DB, **kw)

    # addresses
    @property
    def env(self) -> dict:
        return {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(self.port), "POSTGRES_USER": self.USER,
                "POSTGRES_PASSWORD": self.PASSWORD, "POSTGRES_DB": self.DB}

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/{self.DB}"

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str | None = None, **kw) -> psycopg.Connection:
        """A new autocommit connection (to users_db unless dbname); the caller closes it."""
        kw.setdefault("connect_timeout", 10)
        kw.setdefault("autocommit", True)
        return psycopg.connect(self.dsn_for(dbname or self.DB), **kw)

    def sql(self, query: str, *params, dbname: str | None = None) -> list:
        """Runs one statement on a fresh connection; returns its rows ([] if it has none)."""
        with self.connect(dbname) as c:
            cur = c.execute(query, params or None)
            return cur.fetchall() if cur.description else []


def migrate(pg: Postgres, *args: str, timeout: float = 60.0,
            superuser: bool = False) -> subprocess.CompletedProcess:
    """Runs `bin/migrate up` (or the given arguments) against pg as user_sync_owner (as the
    superuser with superuser=True) and asserts it exits 0."""
    argv = [str(bin_dir() / "migrate"), *(args or ("up",))]
    env = pg.env if superuser else pg.env_for("migrate")
    r = subprocess.run(argv, env=service_env(env), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


# --- NATS ----------------------------------------------------------------------------------------

# The users of deploy/nats-server.conf: one per service, named after its binary, and admin (for
# tests that talk to NATS themselves, as people do). Their passwords are made once per test
# session: every Nats gets them all (NATS_PASSWORD_<USER> in its environment, as make infra
# passes them), every Service of a binary that talks to NATS logs in as its own user
# (nats_service_env), and nats-py clients connect with **nats_admin().
NATS_SERVICE_USERS = ("user-api", "outbox-relay", "notification-consumer")
NATS_USERS = NATS_SERVICE_USERS + ("admin",)
# The settings through which a binary can be given NATS credentials; one of them in a Service's
# env means the test chose them, and the harness adds none.
NATS_AUTH_SETTINGS = ("NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_CREDS_FILE",
                      "NATS_NKEY_SEED_FILE")
_nats_secrets: dict[str, tuple[str, Path]] = {}
_nats_secrets_lock = threading.Lock()


def nats_password_var(user: str) -> str:
    """The variable deploy/nats-server.conf reads user's password from: NATS_PASSWORD_OUTBOX_RELAY."""
    return "NATS_PASSWORD_" + user.upper().replace("-", "_")


def new_nats_password() -> str:
    """32 letters and digits, starting with a letter: nats-server parses a variable's value as a
    config value, and one that looks like a number (or true, on, ...) is not a string."""
    import secrets
    import string
    alnum = string.ascii_letters + string.digits
    return secrets.choice(string.ascii_letters) + "".join(secrets.choice(alnum) for _ in range(31))


def nats_secret(user: str) -> tuple[str, Path]:
    """(password, file holding it) of one of NATS_USERS for this test session."""
    with _nats_secrets_lock:
        if not _nats_secrets:
            d = Path(tempfile.mkdtemp(prefix="it-nats-auth-"))
            _dirs.add(str(d))
            if not KEEP_DIRS:
                _mark(d / ".owner", os.getpid())
            for u in NATS_USERS:
                pw, f = new_nats_password(), d / f"{u}.password"
                fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(pw + "\n")
                _nats_secrets[u] = (pw, f)
        return _nats_secrets[user]


def nats_admin() -> dict:
    """nats-py connect() keyword arguments of the admin user: nats.connect(url, **nats_admin())."""
    return {"user": "admin", "password": nats_secret("admin")[0]}


def nats_service_env(binary: str, env: dict) -> dict:
    """What a Service of binary (user-api, outbox-relay, notification-consumer) needs to log in to
    the harness's NATS as its own user: NATS_USER and NATS_PASSWORD_FILE, when env names a
    NATS_URL without credentials in it and sets none of NATS_AUTH_SETTINGS (set NATS_USER to ""
    to run a binary anonymously). Otherwise {}."""
    url = str(env.get("NATS_URL", ""))
    if binary not in NATS_SERVICE_USERS or not url or "@" in url \
            or any(k in env for k in NATS_AUTH_SETTINGS):
        return {}
    return {"NATS_USER": binary, "NATS_PASSWORD_FILE": str(nats_secret(binary)[1])}


class TLSFiles:
    """A CA and the certificates it signed, made with openssl by make_tls_certs(): a server
    certificate for 127.0.0.1 and localhost (subjectAltName) and a client certificate, each with
    its key, all PEM in one folder. Any server of the tests can use them (NATS, PostgreSQL,
    HTTPS)."""

    def __init__(self, dir: Path):
        self.dir = Path(dir)
        self.ca = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        self.server_cert = self.dir / "server.pem"
        self.server_key = self.dir / "server.key"
        self.client_cert = self.dir / "client.pem"
        self.client_key = self.dir / "client.key"

    def client_context(self, cert: bool = True):
        """An ssl.SSLContext that trusts the CA (and presents the client certificate)."""
        import ssl
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def make_tls_certs(dir: str | Path | None = None, days: int = 2) -> TLSFiles:
    """Makes a CA, a server certificate (CN and subjectAltName 127.0.0.1, ::1 and localhost) and a
    client certificate (CN test-client) in dir (default: a new temporary folder), keys mode 0600."""
    if dir is None:
        dir = tempfile.mkdtemp(prefix="it-tls-")
        _dirs.add(str(dir))
        if not KEEP_DIRS:
            _mark(Path(dir, ".owner"), os.getpid())
    t = TLSFiles(Path(dir))
    t.dir.mkdir(parents=True, exist_ok=True)

    def openssl(*args):
        r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {r.stderr.strip()}")

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *key, "-keyout", t.ca_key, "-out", t.ca, "-days", days,
            "-subj", "/CN=user-sync test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, cert, k, subj, ext in (
            ("server", t.server_cert, t.server_key, "/CN=127.0.0.1",
             "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth"),
            ("client", t.client_cert, t.client_key, "/CN=test-client",
             "extendedKeyUsage=clientAuth")):
        csr, extfile = t.dir / f"{name}.csr", t.dir / f"{name}.ext"
        extfile.write_text(ext + "\n")
        openssl("req", "-new", *key, "-keyout", k, "-out", csr, "-subj", subj)
        openssl("x509", "-req", "-in", csr, "-CA", t.ca, "-CAkey", t.ca_key, "-CAcreateserial",
                "-out", cert, "-days", days, "-extfile", extfile)
        csr.unlink()
        extfile.unlink()
    for k in (t.ca_key, t.server_key, t.client_key):
        os.chmod(k, 0o600)
    return t


class Nats(Process):
    """nats-server with JetStream and deploy/nats-server.conf (a PubAck only after the fsync, a
    user per service), store in dir/store; same ports and store across restarts.
    For a cluster member pass cluster_port, routes (nats://host:port of the others' cluster ports)
    and cluster_name; NatsCluster does that for you.
    With tls (make_tls_certs()) clients must speak TLS to it, trusting tls.ca; with tls_verify
    (the default) they must also show a certificate the CA signed. service_env() and
    client_options() give what a service and nats-py need to reach it."""
    name = "nats"

    def __init__(self, port: int | None = None, monitor_port: int | None = None,
                 server_name: str | None = None, cluster_port: int | None = None,
                 routes: list[str] | None = None, cluster_name: str = "test",
                 args: list[str] | tuple = (), dir=None, config: Path | None = NATS_CONFIG,
                 tls: TLSFiles | None = None, tls_verify: bool = True):
        super().__init__(dir)
        self.tls = tls
        self.tls_verify = tls_verify
        self._ports_chosen_here = port is None and monitor_port is None and cluster_port is None
        self.config = config
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.server_name = server_name or f"test-{os.getpid()}-{self.dir.name}"
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.cluster_name = cluster_name
        self.args = list(args)
        self.store = self.dir / "store"

    def _argv(self):
        argv = [tool("NATS_SERVER"), *(["-c", str(self.config)] if self.config else []),
                "-js", "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor_port), "-sd", str(self.store), "-n", self.server_name]
        if self.cluster_port:
            argv += ["--cluster_name", self.cluster_name,
                     "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            if self.routes:
                argv += ["--routes", ",".join(self.routes)]
        if self.tls:
            argv += ["--tls", "--tlscert", str(self.tls.server_cert), "--tlskey",
                     str(self.tls.server_key), "--tlscacert", str(self.tls.ca)]
            if self.tls_verify:
                argv.append("--tlsverify")
        return argv + self.args

    def _env(self):
        return {**os.environ, **{nats_password_var(u): nats_secret(u)[0] for u in NATS_USERS}}

    def service_env(self) -> dict:
        """NATS_URL and, with TLS, the files a service needs to reach this server (its user's
        credentials come from nats_service_env, when the Service starts)."""
        env = {"NATS_URL": self.url}
        if self.tls:
            env["NATS_TLS_CA"] = str(self.tls.ca)
            if self.tls_verify:
                env.update(NATS_TLS_CERT=str(self.tls.client_cert),
                           NATS_TLS_KEY=str(self.tls.client_key))
        return env

    @property
    def admin_url(self) -> str:
        """url with the admin user's credentials in it, for a client that takes only a URL (the
        benchmark's nats.c tools)."""
        return self.url.replace("://", f"://admin:{nats_secret('admin')[0]}@", 1)

    def client_options(self) -> dict:
        """nats-py connect() keyword arguments for this server: the admin user, and TLS."""
        opts = nats_admin()
        if self.tls:
            opts["tls"] = self.tls.client_context(cert=self.tls_verify)
        return opts

    def _repick_ports(self):
        self.port, self.monitor_port = free_port(), free_port()

    def _ready(self):
        if requests.get(f"{self.monitor_url}/healthz", timeout=1).status_code != 200:
            return False
        # Ours, not some other server that holds the port.
        return self.varz()["server_name"] == self.server_name

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def varz(self, what: str = "varz", **params) -> dict:
        """A monitoring endpoint as JSON: varz, jsz, connz, healthz..."""
        return requests.get(f"{self.monitor_url}/{what}", params=params, timeout=5).json()


class NatsCluster:
    """n JetStream servers routed together on loopback; .url lists them all for clients."""

    def __init__(self, n: int = 3, name: str = "test"):
        cports = [free_port() for _ in range(n)]
        routes = [f"nats://127.0.0.1:{p}" for p in cports]
        self.servers = [Nats(server_name=f"{name}-{i}", cluster_port=cports[i], cluster_name=name,
                             routes=[r for j, r in enumerate(routes) if j != i]) for i in range(n)]

    def start(self, timeout: float = 60.0):
        for s in self.servers:
            s.start(wait=False)
        for s in self.servers:
            s.wait_ready(timeout)
        return self

    @property
    def url(self) -> str:
        return ",".join(s.url for s in self.servers)

    def service_env(self) -> dict:
        return {"NATS_URL": self.url}

    def client_options(self) -> dict:
        return nats_admin()

    def stop(self):
        for s in self.servers:
            s.stop()

    def close(self):
        for s in self.servers:
            s.close()


# --- FerretDB ------------------------------------------------------------------------------------

# The set-up the dev stack applies to FerretDB's database (deploy/infra.sh): the GIN index on the
# _id of every collection table FerretDB creates, and plan_cache_mode = force_custom_plan.
FERRETDB_STORE_SQL = REPO_ROOT / "deploy" / "ferretdb-store.sql"
# FerretDB's connection pool, as deploy/infra.sh sets it (FERRET_POOL_MAX_CONNS).
FERRET_POOL_MAX_CONNS = 600

_store: Postgres | None = None
_store_lock = threading.Lock()
_store_seq = itertools.count(1)


def ferretdb_store() -> Postgres:
    """The PostgreSQL server that holds the data of every FerretDB this process starts, one
    database each, with the role ferretdb that FerretDB logs in as (on the unix socket, trusted).
    Started on first use and kept for the whole session, so a FerretDB costs a CREATE DATABASE
    rather than a server; killed at exit like every other server, and started again should it
    have died."""
    global _store
    with _store_lock:
        if _store is None:
            store = Postgres(settings={"max_connections": "1000"})
            store.start()
            store.sql("CREATE ROLE ferretdb LOGIN", dbname="postgres")
            _store = store
        elif not _store.running():
            _store.start()
        return _store


class FerretDB(Process):
    """FerretDB on its PostgreSQL backend, as `make run` runs it: its data in a database of its own
    (self.database) on ferretdb_store(), set up by deploy/ferretdb-store.sql before FerretDB first
    starts. Same port and data across restarts (a kill or a stop leaves the database alone);
    close() drops the database, unless KEEP_TEST_DIRS keeps it for a post-mortem."""
    name = "ferretdb"

    def __init__(self, port: int | None = None, args: list[str] | tuple = (), dir=None):
        super().__init__(dir)
        self._ports_chosen_here = port is None
        self.port = port or free_port()
        self.args = list(args)
        self.database = f"ferretdb_{next(_store_seq)}"
        self.store: Postgres | None = None
        self._database_made = False

    def _prepare(self):
        self.store = ferretdb_store()
        if self._database_made:
            return
        self.store.sql(f'CREATE DATABASE "{self.database}" OWNER ferretdb', dbname="postgres")
        with self.store.connect(self.database) as c:
            c.execute("SET client_min_messages = warning")
            c.execute(FERRETDB_STORE_SQL.read_text())
        self._database_made = True

    def start(self, wait: bool = True, timeout: float | None = None):
        self._prepare()
        return super().start(wait, timeout)

    @property
    def postgresql_url(self) -> str:
        """FerretDB's --postgresql-url: the store's unix socket, as the role ferretdb."""
        # pool_max_conns: as deploy/infra.sh says, FerretDB 1.24 holds a connection for every
        # write of an update command that matches a document until the command ends, and stops
        # answering when its pool (50 by default) runs out.
        return (f"postgres://ferretdb@/{self.database}?host={quote(str(self.store.dir), safe='/')}"
                f"&port={self.store.port}&pool_max_conns={FERRET_POOL_MAX_CONNS}")

    def _argv(self):
        # --debug-addr=- : the debug listener's default is the fixed port 8088, which parallel
        # servers would fight over. --state-dir: its state.json would otherwise land in the cwd.
        return [tool("FERRETDB"), "--handler=postgresql", f"--postgresql-url={self.postgresql_url}",
                f"--listen-addr=127.0.0.1:{self.port}", f"--state-dir={self.dir}", "--debug-addr=-",
                "--telemetry=disable", "--log-level=info", *self.args]

    def _repick_ports(self):
        self.port = free_port()

    def _ready(self):
        if not port_open(self.port):
            return False
        with self.client(serverSelectionTimeoutMS=1000) as c:
            c.admin.command("ping")
        return True

    def close(self):
        if self.closed:
            return
        super().close()
        if self._database_made and not KEEP_DIRS and self.store is not None and self.store.running():
            try:
                self.store.sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)',
                               dbname="postgres")
            except psycopg.Error:
                pass  # the store goes at exit anyway

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def client(self, **kw):
        """A new pymongo.MongoClient; the caller closes it (or uses it in a with block)."""
        import pymongo
        kw.setdefault("serverSelectionTimeoutMS", 5000)
        return pymongo.MongoClient(self.uri, **kw)

    def pg_connect(self) -> psycopg.Connection:
        """A new autocommit connection, as the superuser, to the PostgreSQL database that holds
        this FerretDB's data; the caller closes it."""
        return self.store.connect(self.database)


# --- the project's binaries ----------------------------------------------------------------------

PORT_VARS = {"user-api": "USER_API_PORT", "notification-consumer": "NOTIFICATION_CONSUMER_PORT",
             "outbox-relay": "OUTBOX_RELAY_PORT"}


def service_env(*envs: dict, **extra) -> dict:
    """The process environment without the dev stack's variables, updated with envs and extra."""
    env = {k: v for k, v in os.environ.items() if k not in STACK_VARS}
    for e in envs:
        env.update({k: str(v) for k, v in e.items()})
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Service(Process):
    """One of the project's binaries (bin/<name>, or $BIN_DIR/<name>) run with env and args.

    Its stdout and stderr go to dir/<name>.log (log_text()). start() waits until
    GET http://127.0.0.1:<port>/healthz answers 200, port being the `port` argument or the value
    of the binary's port variable in env (USER_API_PORT, NOTIFICATION_CONSUMER_PORT,
    OUTBOX_RELAY_PORT); with no port it only checks the process did not exit at once.
    env is laid over the caller's environment minus the dev stack's variables.
    """
    start_timeout = 20.0

    def __init__(self, name: str, env: dict | None = None, args: list[str] | tuple = (),
                 port: int | None = None, binary: str | Path | None = None,
                 health_path: str = "/healthz", dir=None, tls_ca=None):
        self.name = name
        # With tls_ca (a CA certificate file), the service speaks HTTPS and is checked with it.
        self.tls_ca = str(tls_ca) if tls_ca else None
        super().__init__(dir)
        self.binary = Path(binary) if binary else bin_dir() / name
        self.env = dict(env or {})
        self.args = list(args)
        pv = PORT_VARS.get(name)
        self.port = port or (int(self.env[pv]) if pv and pv in self.env else None)
        self.health_path = health_path

    def _argv(self):
        if not _exe(str(self.binary)):
            raise FileNotFoundError(f"{self.binary} is not built (make, or set BIN_DIR)")
        return [str(self.binary), *self.args]

    def _env(self):
        return service_env(as_role(self.binary.name, self.env),
                           nats_service_env(self.binary.name, self.env))

    def _ready(self):
        if self.port is None:
            time.sleep(0.2)
            return True
        r = requests.get(f"{self.url}{self.health_path}", timeout=1, verify=self.tls_ca or True)
        return r.status_code == 200

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.port}"

    def wait_exit(self, timeout: float = 10.0) -> int:
        """Waits for the process to end by itself; returns its exit status."""
        rc = self.proc.wait(timeout)
        _live.discard(self)
        return rc

    def close(self):
        """As Process.close(); the log of a sanitizer build is scanned first (into
        sanitizer_findings), so a report fails the test even where the test does not look."""
        if not self.closed and self.proc is not None:
            self.kill()
            _collect_sanitizer_reports(self.binary, self.log_text(), f"{self.name} ({self.log_path})")
        super().close()


def run_binary(name: str, *args: str, env: dict | None = None, timeout: float = 60.0,
               input: str | None = None) -> subprocess.CompletedProcess:
    """Runs bin/<name> to completion (e.g. `--help`, a check-only mode, replay); text output.
    The output of a sanitizer build is scanned into sanitizer_findings."""
    binary = bin_dir() / name
    r = subprocess.run([str(binary), *args],
                       env=service_env(as_role(name, env or {}), nats_service_env(name, env or {})),
                       input=input,
                       capture_output=True, text=True, timeout=timeout)
    _collect_sanitizer_reports(binary, r.stdout + r.stderr, f"{name} {' '.join(args)}")
    return r
