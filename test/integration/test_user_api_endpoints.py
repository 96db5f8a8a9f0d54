"""user-api endpoints: every route and status of the happy paths, checked through HTTP and SQL,
including the outbox row each change writes and the demo README's curl examples."""
import re
import uuid

import pytest

from user_api_fixtures import *  # noqa: F401,F403  (fixtures: api)
from user_api_fixtures import RFC3339_UTC, assert_problem, parse_ts, unique_email

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TRACEPARENT_RE = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def assert_user_shape(u):
    assert set(u) >= {"id", "name", "email", "version", "created_at", "updated_at"}, u
    assert isinstance(u["id"], int) and u["id"] > 0
    assert isinstance(u["version"], int)
    assert RFC3339_UTC.match(u["created_at"]), u["created_at"]
    assert RFC3339_UTC.match(u["updated_at"]), u["updated_at"]


def assert_event(row, user, event_type, version, deleted=False):
    """row is an outbox row as a dict; user the API's view of the user at that version."""
    kind = event_type.split("_", 1)[1]
    assert UUID_RE.match(str(row["event_id"])), row["event_id"]
    assert row["aggregate_id"] == user["id"]
    assert row["event_type"] == event_type
    assert row["version"] == version
    assert row["subject"] == f"user.events.{kind}"
    assert TRACEPARENT_RE.match(row["headers"].get("traceparent", "")), row["headers"]
    p = row["payload"]
    assert p["id"] == user["id"]
    if deleted:
        # A deletion carries no personal data (docs/events.md, schema version 3).
        assert "name" not in p and "email" not in p, p
    else:
        assert p["name"] == user["name"]
        assert p["email"] == user["email"]
    assert p["version"] == version
    assert RFC3339_UTC.match(p["updated_at"]), p["updated_at"]
    if deleted:
        assert p.get("deleted") is True, p
    else:
        assert "deleted" not in p or p["deleted"] is False, p
        assert parse_ts(p["updated_at"]) == parse_ts(user["updated_at"]), (p, user)


# --- POST /users -------------------------------------------------------------------------------

def test_create_returns_201_with_user_location_and_etag(api):
    email = unique_email()
    before = api.counts()
    r = api.post("/users", json={"name": "Ada Lovelace", "email": email})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    u = r.json()
    assert_user_shape(u)
    assert u["name"] == "Ada Lovelace" and u["email"] == email and u["version"] == 1
    assert r.headers["Location"] == f"/users/{u['id']}"
    assert r.headers["ETag"] == '"1"'
    assert api.counts() == (before[0] + 1, before[1] + 1)

    row = api.sql_one("SELECT name, email, version FROM users WHERE id = %s", (u["id"],))
    assert row == ("Ada Lovelace", email, 1)
    events = api.outbox_for(u["id"])
    assert len(events) == 1
    assert_event(events[0], u, "user_created", 1)


def test_create_accepts_charset_parameter(api):
    r = api.post("/users", data=f'{{"name":"Charset","email":"{unique_email()}"}}'.encode(),
                 headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text


def test_create_accepts_media_type_in_other_letter_case(api):
    # Media types are case-insensitive (RFC 9110 section 8.3.1).
    r = api.post("/users", data=f'{{"name":"Case","email":"{unique_email()}"}}'.encode(),
                 headers={"Content-Type": "Application/JSON"})
    assert r.status_code == 201, r.text


def test_create_trims_name_and_email_and_keeps_email_case(api):
    local = "Mixed.Case." + uuid.uuid4().hex[:8]
    r = api.post("/users", json={"name": "   Grace Hopper  ", "email": f"  {local}@Example.COM  "})
    assert r.status_code == 201, r.text
    u = r.json()
    assert u["name"] == "Grace Hopper"
    assert u["email"] == f"{local}@Example.COM"
    assert api.sql_one("SELECT name, email FROM users WHERE id = %s", (u["id"],)) == \
        ("Grace Hopper", f"{local}@Example.COM")


def test_create_trims_surrounding_tabs_and_newlines(api):
    """Tabs and newlines are white space: around the value they are trimmed before validation
    (inside it they are control characters and refused, see the bad-input tests)."""
    r = api.post("/users", json={"name": "\t Grace Hopper \n", "email": f"\n{unique_email()}\t"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Grace Hopper"
    assert not r.json()["email"][0].isspace() and not r.json()["email"][-1].isspace()


def test_create_accepts_unicode_name(api):
    name = "Zoë Ångström 李小龍 😀"
    r = api.post("/users", json={"name": name, "email": unique_email()})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == name
    assert api.sql_one("SELECT name FROM users WHERE id = %s", (r.json()["id"],)) == (name,)


def test_sql_injection_text_is_stored_verbatim(api):
    name = "Robert'); DROP TABLE users;--"
    email = f"o'brien+{uuid.uuid4().hex[:8]}@example.com"
    r = api.post("/users", json={"name": name, "email": email})
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    assert api.sql_one("SELECT name, email FROM users WHERE id = %s", (uid,)) == (name, email)
    assert api.sql_one("SELECT to_regclass('public.users') IS NOT NULL") == (True,)
    assert api.get(f"/users/{uid}").json()["name"] == name


# --- GET /users/{id} ---------------------------------------------------------------------------

def test_get_user_returns_user_and_etag(api):
    u = api.create()
    r = api.get(f"/users/{u['id']}")
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"1"'
    assert r.json() == u


def test_get_unknown_user_is_404_problem(api):
    r = api.get("/users/9223372036854775807")
    assert_problem(r, 404)


# --- GET /users --------------------------------------------------------------------------------

def test_list_users_in_id_order_with_default_limit(api):
    for _ in range(3):
        api.create()
    r = api.get("/users")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    users = r.json()
    assert isinstance(users, list) and users
    assert len(users) <= 100
    ids = [u["id"] for u in users]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for u in users:
        assert_user_shape(u)
    total = api.sql_one("SELECT count(*) FROM users")[0]
    assert len(users) == min(total, 100)
    if len(users) == 100:
        assert 'rel="next"' in r.headers.get("Link", "")


def test_list_pagination_with_limit_after_and_link(api):
    created = [api.create() for _ in range(5)]
    start = created[0]["id"] - 1
    r = api.get(f"/users?after={start}&limit=2")
    assert r.status_code == 200, r.text
    page = r.json()
    assert [u["id"] for u in page] == [created[0]["id"], created[1]["id"]]
    assert r.headers["Link"] == f'</users?after={created[1]["id"]}&limit=2>; rel="next"'

    # Follow the links to the end: every user after start, each once, in id order, and no link
    # leads to an empty page.
    seen = []
    url = f"/users?after={start}&limit=2"
    for _ in range(1000):
        r = api.get(url)
        assert r.status_code == 200, r.text
        assert r.json() or not seen, f"{url} is an empty page"
        seen += [u["id"] for u in r.json()]
        link = r.headers.get("Link")
        if not link:
            break
        m = re.match(r'^<([^>]+)>; rel="next"$', link)
        assert m, link
        url = m.group(1)
    expected = [row[0] for row in api.sql("SELECT id FROM users WHERE id > %s ORDER BY id", (start,))]
    assert seen == expected


def test_list_full_last_page_has_no_link(api):
    """A page that ends at the last user is full, yet there is no next page to link to."""
    first, second = api.create(), api.create()
    r = api.get(f"/users?after={first['id'] - 1}&limit=2")
    assert r.status_code == 200, r.text
    assert [u["id"] for u in r.json()] == [first["id"], second["id"]]
    assert "Link" not in r.headers, r.headers["Link"]
    r = api.get(f"/users?after={first['id'] - 1}&limit=1")
    assert r.headers["Link"] == f'</users?after={first["id"]}&limit=1>; rel="next"'


def test_list_after_last_id_is_empty_without_link(api):
    last = api.create()["id"]
    r = api.get(f"/users?after={last}&limit=5")
    assert r.status_code == 200, r.text
    assert r.json() == []
    assert "Link" not in r.headers


def test_list_limit_bounds(api):
    for _ in range(2):
        api.create()
    assert len(api.get("/users?limit=1").json()) == 1
    r = api.get("/users?limit=1000")
    assert r.status_code == 200, r.text
    assert len(r.json()) == min(1000, api.sql_one("SELECT count(*) FROM users")[0])


def test_list_ignores_unknown_query_parameters(api):
    r = api.get("/users?limit=1&utm_source=x")
    assert r.status_code == 200, r.text
    assert len(r.json()) == 1


@pytest.mark.parametrize("query", [
    "limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=", "limit=1.5", "limit=99999999999999999999",
    "after=abc", "after=-1", "after=", "after=1x", "after=99999999999999999999",
])
def test_list_bad_query_is_400(api, query):
    r = api.get(f"/users?{query}")
    assert_problem(r, 400)


# --- PUT /users/{id} ---------------------------------------------------------------------------

def test_update_returns_new_version_and_writes_event(api):
    u = api.create()
    email = unique_email()
    r = api.put(f"/users/{u['id']}", json={"name": "New Name", "email": email})
    assert r.status_code == 200, r.text
    v = r.json()
    assert_user_shape(v)
    assert v["id"] == u["id"] and v["name"] == "New Name" and v["email"] == email
    assert v["version"] == 2
    assert r.headers["ETag"] == '"2"'
    assert v["created_at"] == u["created_at"]
    assert parse_ts(v["updated_at"]) > parse_ts(u["updated_at"])
    assert api.get(f"/users/{u['id']}").json() == v
    events = api.outbox_for(u["id"])
    assert [e["event_type"] for e in events] == ["user_created", "user_updated"]
    assert_event(events[1], v, "user_updated", 2)


def test_update_with_matching_if_match(api):
    u = api.create()
    r = api.put(f"/users/{u['id']}", json={"name": "Matched", "email": u["email"]},
                headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2


def test_update_with_stale_if_match_is_412_and_writes_nothing(api):
    u = api.create()
    before = api.counts()
    r = api.put(f"/users/{u['id']}", json={"name": "Stale", "email": u["email"]},
                headers={"If-Match": '"7"'})
    assert_problem(r, 412)
    assert api.counts() == before
    assert api.get(f"/users/{u['id']}").json() == u


@pytest.mark.parametrize("if_match,status", [
    ("*", 200),              # any current version (RFC 9110 13.1.1)
    ('"9", "1"', 200),       # a list matches when one member does
    ('W/"1"', 412),          # If-Match compares strongly: a weak tag never matches
])
def test_if_match_forms(api, if_match, status):
    """Contract gap chosen here: If-Match as RFC 9110 defines it."""
    u = api.create()
    r = api.put(f"/users/{u['id']}", json={"name": "Forms", "email": u["email"]},
                headers={"If-Match": if_match})
    assert r.status_code == status, r.text


def test_if_match_star_on_unknown_user_is_404(api):
    r = api.put("/users/9223372036854775807", json={"name": "X", "email": unique_email()},
                headers={"If-Match": "*"})
    assert_problem(r, 404)


def test_update_keeping_own_email_in_other_case_is_allowed(api):
    u = api.create()
    r = api.put(f"/users/{u['id']}", json={"name": u["name"], "email": u["email"].upper()})
    assert r.status_code == 200, r.text
    assert r.json()["email"] == u["email"].upper()


def test_update_unknown_user_is_404_and_writes_nothing(api):
    before = api.counts()
    r = api.put("/users/9223372036854775807", json={"name": "Nobody", "email": unique_email()})
    assert_problem(r, 404)
    assert api.counts() == before


def test_update_to_taken_email_in_other_case_is_409(api):
    a, b = api.create(), api.create()
    before = api.counts()
    r = api.put(f"/users/{b['id']}", json={"name": "B", "email": a["email"].upper()})
    assert_problem(r, 409)
    assert api.counts() == before
    assert api.get(f"/users/{b['id']}").json() == b


# --- DELETE /users/{id} ------------------------------------------------------------------------

def test_delete_returns_204_then_404_and_writes_event(api):
    u = api.create()
    r = api.delete(f"/users/{u['id']}")
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_problem(api.get(f"/users/{u['id']}"), 404)
    assert api.sql_one("SELECT count(*) FROM users WHERE id = %s", (u["id"],)) == (0,)
    events = api.outbox_for(u["id"])
    assert [e["event_type"] for e in events] == ["user_created", "user_deleted"]
    assert_event(events[1], u, "user_deleted", 2, deleted=True)
    assert u["id"] not in [x["id"] for x in api.get(f"/users?after={u['id'] - 1}&limit=1").json()]

    before = api.counts()
    assert_problem(api.delete(f"/users/{u['id']}"), 404)
    assert api.counts() == before


def test_delete_after_update_event_version(api):
    u = api.create()
    api.put(f"/users/{u['id']}", json={"name": "Up", "email": u["email"]})
    api.put(f"/users/{u['id']}", json={"name": "Up2", "email": u["email"]})
    assert api.delete(f"/users/{u['id']}").status_code == 204
    events = api.outbox_for(u["id"])
    assert [(e["event_type"], e["version"]) for e in events] == \
        [("user_created", 1), ("user_updated", 2), ("user_updated", 3), ("user_deleted", 4)]
    assert events[2]["payload"]["name"] == "Up2"
    assert "name" not in events[3]["payload"] and "email" not in events[3]["payload"]


def test_delete_with_if_match(api):
    u = api.create()
    before = api.counts()
    assert_problem(api.delete(f"/users/{u['id']}", headers={"If-Match": '"2"'}), 412)
    assert api.counts() == before
    assert api.get(f"/users/{u['id']}").status_code == 200
    r = api.delete(f"/users/{u['id']}", headers={"If-Match": '"1"'})
    assert r.status_code == 204, r.text


def test_deleted_email_can_be_reused(api):
    u = api.create()
    assert api.delete(f"/users/{u['id']}").status_code == 204
    r = api.post("/users", json={"name": "Again", "email": u["email"]})
    assert r.status_code == 201, r.text
    assert r.json()["id"] != u["id"]


# --- traceparent -------------------------------------------------------------------------------

def test_traceparent_of_the_request_is_stored_with_each_event(api):
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    u = api.post("/users", json={"name": "Traced", "email": unique_email()},
                 headers={"traceparent": tp}).json()
    tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    assert api.put(f"/users/{u['id']}", json={"name": "Traced 2", "email": u["email"]},
                   headers={"traceparent": tp2}).status_code == 200
    tp3 = "00-11111111111111111111111111111111-2222222222222222-01"
    assert api.delete(f"/users/{u['id']}", headers={"traceparent": tp3}).status_code == 204
    assert [e["headers"]["traceparent"] for e in api.outbox_for(u["id"])] == [tp, tp2, tp3]


@pytest.mark.parametrize("bad", [
    "garbage",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   # all-zero parent id
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",   # upper case
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",    # short trace id
])
def test_invalid_traceparent_is_replaced_by_a_new_one(api, bad):
    r = api.post("/users", json={"name": "Untraced", "email": unique_email()}, headers={"traceparent": bad})
    assert r.status_code == 201, r.text
    [e] = api.outbox_for(r.json()["id"])
    tp = e["headers"]["traceparent"]
    assert TRACEPARENT_RE.match(tp) and tp != bad
    assert tp[3:35] != "0" * 32 and tp[36:52] != "0" * 16


def test_missing_traceparent_gets_a_new_one_per_request(api):
    a, b = api.create(), api.create()
    ta = api.outbox_for(a["id"])[0]["headers"]["traceparent"]
    tb = api.outbox_for(b["id"])[0]["headers"]["traceparent"]
    assert TRACEPARENT_RE.match(ta) and TRACEPARENT_RE.match(tb)
    assert ta[3:35] != tb[3:35]


def test_event_ids_are_unique_uuids(api):
    u = api.create()
    for i in range(3):
        api.put(f"/users/{u['id']}", json={"name": f"n{i}", "email": u["email"]})
    ids = [str(e["event_id"]) for e in api.outbox_for(u["id"])]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert all(UUID_RE.match(i) for i in ids)


# --- operations endpoints ----------------------------------------------------------------------

def test_healthz(api):
    r = api.get("/healthz")
    assert r.status_code == 200, r.text


def test_readyz_when_postgres_is_up(api):
    r = api.get("/readyz")
    assert r.status_code == 200, r.text


def test_metrics_prometheus_text(api):
    api.get("/users?limit=1")
    r = api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "http_requests_total" in r.text
    assert re.search(r"^# TYPE http_requests_total counter$", r.text, re.M), r.text[:2000]


def test_metrics_group_by_route_not_by_path(api):
    """Ids in paths would make one time series per user."""
    u = api.create()
    api.get(f"/users/{u['id']}")
    api.get("/users/987654321987")
    text = api.get("/metrics").text
    assert f"/users/{u['id']}" not in text and "987654321987" not in text
    assert re.search(r'http_requests_total\{[^}]*"/users/\{', text), text[:2000]


def test_request_id_is_echoed_in_problems(api):
    r = api.get("/users/9223372036854775807", headers={"X-Request-Id": "test-req-42"})
    body = assert_problem(r, 404)
    assert body["request_id"] == "test-req-42"
    assert r.headers.get("X-Request-Id") == "test-req-42"


def test_problem_request_id_is_made_when_absent(api):
    body = assert_problem(api.get("/users/9223372036854775807"), 404)
    assert body["request_id"]


# --- the demo README's curl examples, as written -----------------------------------------------

def test_demo_readme_curl_examples(fresh_api):
    """curl -X POST /users, PUT /users/1, GET /users from the original demo's README, on a fresh
    database as in the README (the user it creates is /users/1)."""
    api = fresh_api
    r = api.post("/users", data=b'{\n  "name": "John Doe",\n  "email": "john@example.com"\n}',
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert {"id", "name", "email", "updated_at"} <= set(body)
    assert body["name"] == "John Doe" and body["email"] == "john@example.com"

    r = api.put("/users/1", data=b'{\n  "name": "John Doe Updated",\n  "email": "john.updated@example.com"\n}',
                headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"id", "name", "email", "updated_at"} <= set(body)
    assert body["id"] == 1 and body["name"] == "John Doe Updated"
    assert body["email"] == "john.updated@example.com"

    r = api.get("/users")
    assert r.status_code == 200, r.text
    users = r.json()
    assert isinstance(users, list)
    assert all({"id", "name", "email", "updated_at"} <= set(u) for u in users)
    assert any(u["id"] == 1 and u["name"] == "John Doe Updated" for u in users)
