"""The load generator: concurrent writers doing create, update and delete through user-api, each
request recorded as ok, failed or unknown.

  ok       a 2xx answer: the write is committed.
  failed   the request never reached the server (connection refused, connect timeout), or it
           answered 4xx/5xx. A 503 means "not written" by the API's contract; the checker holds
           the API to it (a failed write found in PostgreSQL is counted as a phantom).
  unknown  the request was sent but no answer came (timeout, reset, closed): it may or may not
           be committed. The checker requires PostgreSQL and MongoDB to agree on it.

Each writer thread owns its users, so the operations on one user are sequential and each answer
can be checked against the last known version. Each thread draws from random.Random(seed * 1000 + i):
the same seed gives the same mix of operations (the faults' timing makes the outcomes differ).
"""
from __future__ import annotations

import random
import threading
import time
import uuid

import requests
import urllib3

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"


def classify_error(e: Exception) -> str:
    """failed when the request surely never reached the server, unknown otherwise."""
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return FAILED
    if isinstance(e, requests.exceptions.ConnectionError):
        cause = e.args[0] if e.args else None
        reason = getattr(cause, "reason", None)
        if isinstance(reason, urllib3.exceptions.NewConnectionError) or \
                isinstance(cause, urllib3.exceptions.NewConnectionError):
            return FAILED
        if "Connection refused" in str(e) or "Failed to establish a new connection" in str(e):
            return FAILED
    return UNKNOWN


class Writer(threading.Thread):
    def __init__(self, gen: "LoadGen", idx: int):
        super().__init__(name=f"writer-{idx}", daemon=True)
        self.gen = gen
        self.idx = idx
        self.rng = random.Random(gen.seed * 1000 + idx)
        self.users: dict[int, dict] = {}   # uid -> {"version": int or None}
        self.n = 0

    def run(self):
        while not self.gen.stopping.is_set():
            self.step()
            # Paced, when asked, so that the whole load stays near gen.rate requests a second.
            if self.gen.rate:
                time.sleep(self.rng.uniform(0.5, 1.5) * len(self.gen.writers) / self.gen.rate)

    def request(self, method, path, **kw):
        kw.setdefault("timeout", self.gen.timeout)
        # A new connection per request: a pooled one left over from a killed user-api would
        # turn a request that never reached the new process into an unknown.
        kw.setdefault("headers", {})["Connection"] = "close"
        return requests.request(method, self.gen.url + path, **kw)

    def step(self):
        self.n += 1
        live = [u for u in self.users if not self.users[u].get("gone")]
        roll = self.rng.random()
        full = self.gen.max_users and len(live) >= self.gen.max_users
        if not live or (not full and (roll < 0.3 or (len(live) < 2 and roll < 0.6))):
            self.create()
        elif roll < 0.9:
            self.update(self.rng.choice(live))
        else:
            self.delete(self.rng.choice(live))

    def record(self, **op):
        op.setdefault("thread", self.idx)
        op["t"] = time.monotonic()
        self.gen.add(op)
        return op

    def create(self):
        email = f"c{self.gen.seed}-{self.idx}-{self.n}-{uuid.uuid4().hex[:6]}@example.com"
        name = f"w{self.idx} n{self.n}"
        try:
            r = self.request("POST", "/users", json={"name": name, "email": email})
        except requests.RequestException as e:
            self.record(kind="create", uid=None, email=email, name=name,
                        status=classify_error(e), error=type(e).__name__)
            return
        if r.status_code == 201:
            body = r.json()
            self.users[body["id"]] = {"version": body["version"]}
            self.record(kind="create", uid=body["id"], email=email, name=name, status=OK,
                        code=201, version=body["version"],
                        bad=None if body["version"] == 1 else f"create answered version {body['version']}")
        else:
            self.record(kind="create", uid=None, email=email, name=name, status=FAILED,
                        code=r.status_code)

    def update(self, uid):
        st = self.users[uid]
        email = f"u{self.gen.seed}-{self.idx}-{self.n}-{uuid.uuid4().hex[:6]}@example.com"
        name = f"w{self.idx} n{self.n}"
        try:
            r = self.request("PUT", f"/users/{uid}", json={"name": name, "email": email})
        except requests.RequestException as e:
            self.record(kind="update", uid=uid, email=email, name=name, status=classify_error(e),
                        error=type(e).__name__)
            if classify_error(e) == UNKNOWN:
                st["version"] = None
            return
        if r.status_code == 200:
            v = r.json()["version"]
            bad = None
            if st["version"] is not None and v != st["version"] + 1:
                bad = f"update answered version {v} after version {st['version']}"
            st["version"] = v
            self.record(kind="update", uid=uid, email=email, name=name, status=OK, code=200,
                        version=v, bad=bad)
        else:
            if r.status_code == 404:
                # Only an unknown delete of ours can have removed it.
                st["gone"] = True
            self.record(kind="update", uid=uid, email=email, name=name, status=FAILED,
                        code=r.status_code)

    def delete(self, uid):
        st = self.users[uid]
        try:
            r = self.request("DELETE", f"/users/{uid}")
        except requests.RequestException as e:
            status = classify_error(e)
            self.record(kind="delete", uid=uid, status=status, error=type(e).__name__)
            if status == UNKNOWN:
                st["version"] = None
            return
        if r.status_code == 204:
            st["gone"] = True
            v = st["version"] + 1 if st["version"] is not None else None
            self.record(kind="delete", uid=uid, status=OK, code=204, version=v)
        else:
            if r.status_code == 404:
                st["gone"] = True
            self.record(kind="delete", uid=uid, status=FAILED, code=r.status_code)


class LoadGen:
    """threads writers against url until stop(), about rate requests a second in all (0: as fast
    as each writer's requests are answered); ops is the list of every request's record."""

    def __init__(self, url: str, threads: int = 4, seed: int = 1, rate: float = 0.0,
                 timeout: float = 5.0, max_users: int = 0):
        self.url = url
        self.seed = seed
        self.rate = rate
        self.max_users = max_users     # live users per writer at most (0: no limit)
        self.timeout = timeout
        self.ops: list[dict] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.writers = [Writer(self, i) for i in range(threads)]

    def add(self, op):
        with self.lock:
            self.ops.append(op)

    def start(self):
        for w in self.writers:
            w.start()
        return self

    def stop(self):
        self.stopping.set()
        for w in self.writers:
            w.join(30)

    def counts(self) -> dict:
        with self.lock:
            ops = list(self.ops)
        return {s: sum(1 for o in ops if o["status"] == s) for s in (OK, FAILED, UNKNOWN)}

    def wait_ok(self, n: int, timeout: float = 60.0):
        """Waits until at least n requests were answered ok (the load really runs)."""
        deadline = time.monotonic() + timeout
        while self.counts()[OK] < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} ok requests after {timeout}s: {self.counts()}")
            time.sleep(0.1)
