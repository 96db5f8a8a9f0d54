"""docs/openapi.yaml stays true: every documented route and method exists on the running user-api,
and every route the server has is documented."""
import os
import re

import pytest

from user_api_fixtures import *  # noqa: F401,F403  (fixtures: api)
from user_api_fixtures import REPO, unique_email

SPEC = os.path.join(REPO, "docs", "openapi.yaml")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

# The routes of bin/user-api (user-api's route table plus the built-in operations endpoints).
# When a route is added to the server, add it here and to docs/openapi.yaml.
SERVER_ROUTES = {
    "/users": {"GET", "POST"},
    "/users/{id}": {"GET", "PUT", "DELETE"},
    "/healthz": {"GET"},
    "/readyz": {"GET"},
    "/metrics": {"GET"},
}
# Paths that a server like this one might grow; if one answers, it must be documented.
CANDIDATE_PATHS = ["/", "/users/{id}/events", "/users/{id}/history", "/version", "/openapi.yaml",
                   "/openapi.json", "/docs", "/health", "/ready", "/status", "/debug", "/users/search"]


def load_spec():
    """Block-mapping YAML to nested dicts, enough for the keys this test needs. PyYAML is used when
    installed; the requirements do not include it, so a small reader stands in. Flow values and
    list items are kept as text or skipped."""
    text = open(SPEC, encoding="utf-8").read()
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


SPEC_DOC, SPEC_TEXT = load_spec()


def documented_routes():
    out = {}
    for path, item in SPEC_DOC["paths"].items():
        out[path] = {m.upper() for m in item if m.upper() in METHODS + ["HEAD", "OPTIONS"]}
    return out


def test_spec_is_openapi_3():
    assert str(SPEC_DOC["openapi"]).startswith("3.0"), SPEC_DOC["openapi"]
    assert SPEC_DOC["info"]["title"] and SPEC_DOC["info"]["version"]


def test_every_operation_has_responses_and_an_operation_id():
    ids = []
    for path, item in SPEC_DOC["paths"].items():
        for m, op in item.items():
            if m.upper() not in METHODS:
                continue
            assert op.get("responses"), f"{m} {path} has no responses"
            assert op.get("operationId"), f"{m} {path} has no operationId"
            ids.append(op["operationId"])
    assert len(ids) == len(set(ids)), ids


def test_every_ref_resolves():
    refs = set(re.findall(r'\$ref:\s*["\']?(#/[^"\'\s},]+)', SPEC_TEXT))
    assert refs
    for ref in refs:
        node = SPEC_DOC
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"unresolved {ref}"
            node = node[part]


def test_documented_routes_are_the_server_routes():
    assert documented_routes() == SERVER_ROUTES


def concrete(api, path, uid):
    return path.replace("{id}", str(uid))


def valid_request(api, method, path, uid):
    kw = {"timeout": 10}
    if method in ("POST", "PUT"):
        kw["json"] = {"name": "OpenAPI", "email": unique_email()}
    return api.request(method, concrete(api, path, uid), **kw)


def test_every_documented_route_and_method_exists(api):
    """A valid request to each documented operation is answered, neither 404 nor 405 (DELETE
    last, on its own user)."""
    docs = documented_routes()
    for path, methods in sorted(docs.items()):
        for method in sorted(methods, key=lambda m: m == "DELETE"):
            uid = api.create()["id"]
            r = valid_request(api, method, path, uid)
            assert r.status_code not in (404, 405), (method, path, r.status_code, r.text)
            assert r.status_code < 500, (method, path, r.status_code, r.text)
            documented = SPEC_DOC["paths"][path][method.lower()]["responses"]
            assert str(r.status_code) in {str(k) for k in documented}, \
                f"{method} {path} answered {r.status_code}, not among the documented {sorted(documented)}"


@pytest.mark.parametrize("path", sorted(SERVER_ROUTES))
def test_every_method_the_server_answers_is_documented(api, path):
    """Walk the server's routes with every method: what does not answer 405 must be documented,
    and the Allow header of a 405 names exactly the documented methods."""
    docs = documented_routes().get(path, set())
    for method in METHODS:
        uid = api.create()["id"]
        r = valid_request(api, method, path, uid)
        if r.status_code == 405:
            allow = {m.strip() for m in r.headers.get("Allow", "").split(",") if m.strip()}
            assert allow - {"HEAD", "OPTIONS"} == docs, (method, path, r.headers.get("Allow"))
        else:
            assert method in docs, f"{method} {path} answers {r.status_code} but is not in docs/openapi.yaml"


def template_matches(template, path):
    """Whether path (possibly with {id}) is served by the documented template, e.g. /users/search
    by /users/{id} (which answers 404 for it)."""
    rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
    return re.match(rx, path.replace("{id}", "1")) is not None


@pytest.mark.parametrize("path", CANDIDATE_PATHS)
def test_no_undocumented_route_answers(api, path):
    uid = api.create()["id"]
    for method in METHODS:
        r = valid_request(api, method, path, uid)
        if r.status_code != 404:
            assert any(template_matches(t, path) for t in documented_routes()), \
                f"{method} {path} answers {r.status_code} but is not in docs/openapi.yaml"
