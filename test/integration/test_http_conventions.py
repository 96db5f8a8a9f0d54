"""The HTTP conventions user-api (8080) and notification-consumer (8081) share, checked alike on
both ports: an id that cannot exist is answered like one that does not (404), a list is read with
?limit= and ?after= and a bad value is a 400 problem naming the parameter, and
`Link: <…>; rel="next"` appears exactly when a next page exists, so it never leads to an empty
page, and an X-Request-Id is echoed when it is 1 to 64 letters, digits, '-', '_' or '.', and
answered 400 otherwise. Both build these answers with common/http_page.h and common/httpd.c."""
import re

import pytest

from test_consumer_support import Stream, make_event, start_consumer
from user_api_fixtures import *  # noqa: F401,F403  (fixtures: api)
from user_api_fixtures import assert_problem


class Target:
    """One port under test: how to read it, and how to make rows that its list shows."""

    def __init__(self, get, list_path, item_path, id_key, make_rows):
        self.get = get          # get(path, **requests keyword arguments)
        self.list_path = list_path
        self.item_path = item_path
        self.id_key = id_key
        self.make_rows = make_rows  # make_rows(n) -> (after, [ids]): the only rows with id > after


@pytest.fixture
def user_api_target(api):
    def make_rows(n):
        ids = [api.create()["id"] for _ in range(n)]
        return ids[0] - 1, ids
    return Target(api.get, "/users", lambda i: f"/users/{i}", "id", make_rows)


@pytest.fixture
def consumer_target(nats, ferret, services):
    stream = Stream(nats)
    stream.create()
    c = start_consumer(services, nats, ferret)

    def make_rows(n):
        ids = list(range(1, n + 1))
        evs = [make_event("user_created", uid, 1) for uid in ids]
        stream.publish(evs)
        c.wait_events(evs)        # every row: the lanes apply users in no fixed order
        return 0, ids
    return Target(c.get, "/notifications", lambda i: f"/notifications/user/{i}", "user_id", make_rows)


@pytest.fixture(params=["user-api", "notification-consumer"])
def target(request):
    return request.getfixturevalue({"user-api": "user_api_target",
                                    "notification-consumer": "consumer_target"}[request.param])


def check_ids_in_paths(t):
    for bad in ("abc", "0", "-1", "1x", "+1", "99999999999999999999", "9223372036854775808"):
        assert_problem(t.get(t.item_path(bad)), 404)
    assert_problem(t.get(t.item_path(9223372036854775807)), 404)


def check_bad_page_parameters(t):
    for q in ("limit=0", "limit=1001", "limit=-1", "limit=+5", "limit= 5", "limit=x", "limit=",
              "limit=1.5", "after=-1", "after=+1", "after=abc", "after=", "after=1x",
              "after=99999999999999999999"):
        body = assert_problem(t.get(f"{t.list_path}?{q}"), 400)
        assert body["field"] == q.split("=")[0], (q, body)


def check_link_only_to_a_next_page(t):
    after, ids = t.make_rows(3)

    def page(query):
        r = t.get(f"{t.list_path}?{query}")
        assert r.status_code == 200, r.text
        return [row[t.id_key] for row in r.json()], r.headers.get("Link")

    # A full page that ends at the last row: nothing to link to.
    assert page(f"after={after}&limit=3") == (ids, None)
    # A next page exists: the link names it, and it is not empty.
    rows, link = page(f"after={after}&limit=2")
    assert rows == ids[:2]
    assert link == f'<{t.list_path}?after={ids[1]}&limit=2>; rel="next"'
    assert page(f"after={ids[1]}&limit=2") == (ids[2:], None)
    # Past the end: an empty page without a link.
    assert page(f"after={ids[-1]}&limit=2") == ([], None)


def test_both_ports_follow_the_same_conventions(target):
    check_ids_in_paths(target)
    check_bad_page_parameters(target)
    check_link_only_to_a_next_page(target)


UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_request_ids(t):
    """A valid X-Request-Id is echoed (header and problem); any other is refused with 400 naming
    the header, before any route, built-in ones too: a caller never sees its id silently swapped
    for another."""
    longest = "r" * 63 + "."
    for rid in ("abc-DEF_0.9", longest):
        for path in (t.list_path, t.item_path(9223372036854775807), "/healthz"):
            r = t.get(path, headers={"X-Request-Id": rid})
            assert r.headers.get("X-Request-Id") == rid, (path, r.status_code, r.headers)
            if r.status_code >= 400:
                assert r.json()["request_id"] == rid
    for rid in ("r" * 65, "", "a b", "a/b", "a:b", "caf\xe9", "a" * 200):
        for path in (t.list_path, t.item_path(1), "/healthz", "/readyz", "/metrics", "/nowhere"):
            r = t.get(path, headers={"X-Request-Id": rid})
            body = assert_problem(r, 400, "X-Request-Id")
            assert "X-Request-Id" in body["detail"], body
            # The answer carries an id of its own, never the refused one.
            assert UUID.match(body["request_id"]), body
            assert r.headers.get("X-Request-Id") == body["request_id"], r.headers


def test_both_ports_check_request_ids_alike(target):
    check_request_ids(target)


def test_a_write_with_a_bad_request_id_changes_nothing(api):
    for rid in ("x" * 65, "a b"):
        with api.unchanged():
            r = api.post("/users", json={"name": "Rid", "email": f"rid-{len(rid)}@example.com"},
                         headers={"X-Request-Id": rid, "Idempotency-Key": f"rid-{len(rid)}"})
            assert_problem(r, 400, "X-Request-Id")
        uid = api.create()["id"]
        with api.unchanged():
            assert_problem(api.put(f"/users/{uid}", json={"name": "Rid", "email": "rid@example.com"},
                                   headers={"X-Request-Id": rid}), 400, "X-Request-Id")
            assert_problem(api.delete(f"/users/{uid}", headers={"X-Request-Id": rid}), 400,
                           "X-Request-Id")
