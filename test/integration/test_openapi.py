"""The OpenAPI descriptions stay true: docs/openapi.yaml of user-api (8080) and
docs/openapi-notifications.yaml of notification-consumer (8081). Every documented route and method
exists on the running server, and every route the server has, read from its route table in the C
source and the built-in ones of common/httpd.c, is documented."""
import os
import re

import pytest
import requests

import harness
from test_consumer_support import Stream, make_event, start_consumer  # noqa: F401
from user_api_fixtures import *  # noqa: F401,F403  (fixtures: api)
from user_api_fixtures import REPO, unique_email

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# Paths that a server like these might grow; if one answers, it must be documented.
CANDIDATE_PATHS = {
    "user-api": ["/", "/users/{id}/events", "/users/{id}/history", "/version", "/openapi.yaml",
                 "/openapi.json", "/docs", "/health", "/ready", "/status", "/debug",
                 "/users/search"],
    "notification-consumer": ["/", "/notifications/{id}", "/notifications/user",
                              "/notifications/user/{id}/history", "/notifications/events",
                              "/users", "/users/{id}", "/version", "/openapi.yaml", "/openapi.json",
                              "/docs", "/health", "/ready", "/status", "/debug"],
}
SPEC_FILES = {"user-api": "openapi.yaml", "notification-consumer": "openapi-notifications.yaml"}
# Where each server's route table is: (C file, name of the struct http_route array).
ROUTE_TABLES = {"user-api": ("user-api/handlers.c", "user_api_routes"),
                "notification-consumer": ("notification-consumer/api.c", "api_routes")}


def load_spec(path):
    """Block-mapping YAML to nested dicts, enough for the keys this test needs. PyYAML is used when
    installed; the requirements do not include it, so a small reader stands in. Flow values and
    list items are kept as text or skipped."""
    text = open(path, encoding="utf-8").read()
    try:
        import yaml  # type: ignore
        return yaml.safe_load(text), text
    except ImportError:
        pass
    root = {}
    stack = [(-1, root)]
    skip_deeper_than = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than is not None:
            if indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        body = line.strip()
        if body.startswith("- "):
            skip_deeper_than = indent
            continue
        m = re.match(r'^("[^"]*"|\'[^\']*\'|[^:]+):(?:\s+(.*))?$', body)
        if not m:
            continue
        key = m.group(1).strip("\"'")
        value = m.group(2)
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value is None or value == "":
            parent[key] = {}
            stack.append((indent, parent[key]))
        else:
            parent[key] = value.strip()
            if value.strip() in ("|", ">", "|-", ">-"):
                skip_deeper_than = indent
    return root, text


SPECS = {name: load_spec(os.path.join(REPO, "docs", f)) for name, f in SPEC_FILES.items()}


def builtin_routes():
    """/healthz, /readyz and /metrics: the paths common/httpd.c serves on every port (GET only)."""
    src = open(os.path.join(REPO, "common", "httpd.c"), encoding="utf-8").read()
    m = re.search(r"builtin\[\]\s*=\s*\{([^}]*)\}", src)
    assert m, "common/httpd.c has no builtin[] list of paths"
    return {p: {"GET"} for p in re.findall(r'"(/[^"]*)"', m.group(1))}


def server_routes(name):
    """The routes of bin/<name>: its route table in the C source ({} segments named {id}) plus
    the built-in ones. A route added to the server is found here, and must be documented."""
    path, table = ROUTE_TABLES[name]
    src = open(os.path.join(REPO, path), encoding="utf-8").read()
    m = re.search(table + r"\[\]\s*=\s*\{(.*?)\{\s*NULL", src, re.S)
    assert m, f"no route table {table} in {path}"
    routes = builtin_routes()
    for method, pattern in re.findall(r'\{\s*"([A-Z]+)"\s*,\s*"([^"]+)"', m.group(1)):
        routes.setdefault(pattern.replace("{}", "{id}"), set()).add(method)
    assert len(routes) > 3, routes
    return routes


def documented_routes(name):
    out = {}
    for path, item in SPECS[name][0]["paths"].items():
        out[path] = {m.upper() for m in item if m.upper() in METHODS + ["HEAD", "OPTIONS"]}
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_is_openapi_3(name):
    doc = SPECS[name][0]
    assert str(doc["openapi"]).startswith("3.0"), doc["openapi"]
    assert doc["info"]["title"] == name and doc["info"]["version"]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_operation_has_responses_and_an_operation_id(name):
    ids = []
    for path, item in SPECS[name][0]["paths"].items():
        for m, op in item.items():
            if m.upper() not in METHODS:
                continue
            assert op.get("responses"), f"{m} {path} has no responses"
            assert op.get("operationId"), f"{m} {path} has no operationId"
            ids.append(op["operationId"])
    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_ref_resolves(name):
    doc, text = SPECS[name]
    refs = set(re.findall(r'\$ref:\s*["\']?(#/[^"\'\s},]+)', text))
    assert refs
    for ref in refs:
        node = doc
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"unresolved {ref}"
            node = node[part]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_documented_routes_are_the_server_routes(name):
    assert documented_routes(name) == server_routes(name)


class Port:
    """One server under test: its name, base URL, and an id that names a user it has (new()
    gives one that nothing else uses, for a DELETE)."""

    def __init__(self, name, base, new):
        self.name, self.base, self.new = name, base, new

    def request(self, method, path, uid, **kw):
        kw.setdefault("timeout", 10)
        if method in ("POST", "PUT"):
            kw["json"] = {"name": "OpenAPI", "email": unique_email()}
        return requests.request(method, self.base + path.replace("{id}", str(uid)), **kw)


@pytest.fixture(scope="module")
def consumer_port():
    """notification-consumer with one user (id 1) in its copy, on its own NATS and FerretDB."""
    started = []
    try:
        nats = harness.Nats()
        started.append(nats)
        nats.start()
        ferret = harness.FerretDB()
        started.append(ferret)
        ferret.start()
        stream = Stream(nats)
        stream.create()

        class Services:
            def start(self, name, env=None, **kw):
                s = harness.Service(name, env, **kw)
                started.append(s)
                return s.start()
        c = start_consumer(Services(), nats, ferret)
        evs = [make_event("user_created", 1, 1)]
        stream.publish(evs)
        c.wait_events(evs)
        yield Port("notification-consumer", c.base, lambda: 1)
    finally:
        for p in reversed(started):
            p.close()


@pytest.fixture(params=sorted(SPECS))
def port(request):
    if request.param == "user-api":
        a = request.getfixturevalue("api")
        return Port("user-api", a.base, lambda: a.create()["id"])
    return request.getfixturevalue("consumer_port")


def test_every_documented_route_and_method_exists(port):
    """A valid request to each documented operation is answered, neither 404 nor 405, with a
    documented status (DELETE last, on its own user)."""
    docs = documented_routes(port.name)
    for path, methods in sorted(docs.items()):
        for method in sorted(methods, key=lambda m: m == "DELETE"):
            r = port.request(method, path, port.new())
            assert r.status_code not in (404, 405), (method, path, r.status_code, r.text)
            assert r.status_code < 500, (method, path, r.status_code, r.text)
            documented = SPECS[port.name][0]["paths"][path][method.lower()]["responses"]
            assert str(r.status_code) in {str(k) for k in documented}, \
                f"{method} {path} answered {r.status_code}, not among the documented {sorted(documented)}"


def test_every_method_the_server_answers_is_documented(port):
    """Walk the server's routes with every method: what does not answer 405 must be documented,
    and the Allow header of a 405 names exactly the documented methods."""
    for path in sorted(server_routes(port.name)):
        docs = documented_routes(port.name).get(path, set())
        for method in METHODS:
            r = port.request(method, path, port.new())
            if r.status_code == 405:
                allow = {m.strip() for m in r.headers.get("Allow", "").split(",") if m.strip()}
                assert allow - {"HEAD", "OPTIONS"} == docs, (method, path, r.headers.get("Allow"))
            else:
                assert method in docs, \
                    f"{method} {path} answers {r.status_code} but is not in docs/{SPEC_FILES[port.name]}"


def template_matches(template, path):
    """Whether path (possibly with {id}) is served by the documented template, e.g. /users/search
    by /users/{id} (which answers 404 for it)."""
    rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
    return re.match(rx, path.replace("{id}", "1")) is not None


def test_no_undocumented_route_answers(port):
    uid = port.new()
    for path in CANDIDATE_PATHS[port.name]:
        for method in METHODS:
            r = port.request(method, path, uid)
            if r.status_code != 404:
                assert any(template_matches(t, path) for t in documented_routes(port.name)), \
                    f"{method} {path} answers {r.status_code} but is not in docs/{SPEC_FILES[port.name]}"
