"""The HTTP conventions user-api (8080) and notification-consumer (8081) share, checked alike on
both ports: an id that cannot exist is answered like one that does not (404), a list is read with
?limit= and ?after= and a bad value is a 400 problem naming the parameter, and
`Link: <…>; rel="next"` appears exactly when a next page exists, so it never leads to an empty
page. Both build these answers with common/http_page.h and http_path_id() of common/httpd.h."""
import pytest

from test_consumer_support import Stream, make_event, start_consumer
from user_api_fixtures import *  # noqa: F401,F403  (fixtures: api)
from user_api_fixtures import assert_problem


class Target:
    """One port under test: how to read it, and how to make rows that its list shows."""

    def __init__(self, get, list_path, item_path, id_key, make_rows):
        self.get = get
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
