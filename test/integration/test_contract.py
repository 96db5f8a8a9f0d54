"""Contract tests generated from the OpenAPI descriptions: schemathesis reads docs/openapi.yaml
(user-api, 8080) and docs/openapi-notifications.yaml (notification-consumer, 8081), sends what
they allow and some of what they do not, and checks every answer with all its checks: no 5xx, a
documented status, content type and headers, a body that matches its schema, valid input
accepted, invalid input refused, a deleted user gone. The answers that depend on state (a stale
If-Match, a reused Idempotency-Key, a read that waited in vain) are taught per operation in
contract.toml, beside this file, with its fixed seed and number of examples.

The stateful runs follow the descriptions' links (POST /users -> its id and ETag -> GET, PUT,
DELETE /users/{id}; a copy -> its events), and every user written through 8080 is read back on
8081 with min_version, the answer checked against the consumer's description and the write.

One stack for the module: PostgreSQL, NATS, FerretDB, outbox-relay, user-api (the sanitizer
build, its log scanned at the end) and notification-consumer, as the other tests start them."""
import os
import re
import uuid

import hypothesis
import pytest
import requests
import schemathesis

import harness
from test_consumer_support import consumer_env, poll
from user_api_fixtures import REPO, close_api, launch

CONFIG = schemathesis.Config.from_path(os.path.join(os.path.dirname(__file__), "contract.toml"))
USERS = schemathesis.openapi.from_path(os.path.join(REPO, "docs", "openapi.yaml"), config=CONFIG)
NOTIFICATIONS = schemathesis.openapi.from_path(
    os.path.join(REPO, "docs", "openapi-notifications.yaml"), config=CONFIG)

# The stateful runs: scenarios and the most calls in one.
STATEFUL = dict(max_examples=25, stateful_step_count=8)
# What a read with min_version waits at most here: a generated version of a generated user never
# comes, and the default (CONSUMER_READ_WAIT_MAX, 5 s) for each would take minutes.
SHORT_WAIT = "30ms"
WAIT_FORM = re.compile(r"^[0-9]+(ms|s|m|h)?$")
WAITING_READ = "GET /notifications/user/{id}"


class Stack:
    """The services under test and what they stand on; close() stops what was started."""

    def __init__(self):
        self.started = []
        self.api = None

    def _start(self, p):
        self.started.append(p)
        p.start()
        return p

    def start(self):
        self.pg = self._start(harness.Postgres(template=harness.Postgres.template(migrated=True)))
        self.nats = self._start(harness.Nats())
        self.ferret = self._start(harness.FerretDB())
        common = dict(self.pg.env, NATS_URL=self.nats.url, LOG_LEVEL="info")
        self._start(harness.Service("outbox-relay", dict(
            common, OUTBOX_RELAY_PORT=harness.free_port(), OUTBOX_RELAY_BIND="127.0.0.1")))
        self.api = launch(self.pg, NATS_URL=self.nats.url)
        consumer = harness.Service("notification-consumer", consumer_env(
            self.nats, self.ferret, f"notif_{uuid.uuid4().hex[:8]}"))
        self._start(consumer)
        self.api_url = self.api.base
        self.consumer_url = consumer.url
        poll(lambda: requests.get(consumer.url + "/readyz", timeout=5).status_code == 200,
             30, "the consumer to be ready")

    def close(self):
        try:
            if self.api is not None:
                close_api(self.api)
        finally:
            for p in reversed(self.started):
                p.close()


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    try:
        s.start()
        yield s
    finally:
        s.close()


def bounded_wait(case):
    """A wait of the described form becomes SHORT_WAIT, and so does the default wait of a read
    with min_version: the description leaves the maximum to CONSUMER_READ_WAIT_MAX, which the
    generator cannot know (5 s here; beyond it, a 400). A wait in another form is left as
    generated: it is answered 400 at once."""
    q = case.query
    if not q:
        return
    if ("wait" in q and WAIT_FORM.match(str(q["wait"]))) or ("min_version" in q and "wait" not in q):
        q["wait"] = SHORT_WAIT


@USERS.parametrize()
def test_user_api_answers_as_described(case, stack):
    case.call_and_validate(base_url=stack.api_url)


@NOTIFICATIONS.parametrize()
def test_notification_consumer_answers_as_described(case, stack):
    if case.operation.label == WAITING_READ:
        bounded_wait(case)
    case.call_and_validate(base_url=stack.consumer_url)


def read_back(stack, uid, version):
    """GET /notifications/user/{uid}?min_version=version on 8081, validated against its
    description with every check; returns the response."""
    read = NOTIFICATIONS["/notifications/user/{id}"]["GET"].Case(
        path_parameters={"id": uid}, query={"min_version": version, "wait": "5s"})
    r = read.call(base_url=stack.consumer_url)
    read.validate_response(r)
    return r


class UsersWorkflow(USERS.as_state_machine()):
    """user-api's links, each write then read on 8081: the copy reaches the version written, with
    the same fields, or answers 404 once the user is deleted."""
    stack = None
    versions = {}   # user id -> the last version an answer of user-api showed
    read_back = {"written": 0, "deleted": 0}   # the writes checked on 8081

    def setup(self):
        """Each scenario starts with no users and no idempotency keys: Hypothesis replays the
        steps it generated before, and a replayed POST must meet the state the first one met
        (not its own email, taken: 409), or the scenario takes another path and Hypothesis
        reports that instead. The outbox is left alone: what is written still reaches the copy."""
        self.stack.api.sql("TRUNCATE users, idempotency_keys")
        self.versions.clear()

    def get_call_kwargs(self, case):
        return {"base_url": self.stack.api_url}

    def after_call(self, response, case):
        op = case.operation.label
        if op in ("POST /users", "PUT /users/{id}", "GET /users/{id}") \
                and response.status_code in (200, 201):
            user = response.json()
            self.versions[user["id"]] = user["version"]
            if op == "GET /users/{id}":
                return
            r = read_back(self.stack, user["id"], user["version"])
            assert r.status_code == 200, (r.status_code, r.text)
            self.read_back["written"] += 1
            copy = r.json()
            assert copy["version"] >= user["version"], (copy, user)
            if copy["version"] == user["version"]:
                assert copy == {"user_id": user["id"], "name": user["name"], "email": user["email"],
                                "updated_at": user["updated_at"], "version": user["version"]}
        elif op == "DELETE /users/{id}" and response.status_code == 204:
            uid = int(case.path_parameters["id"])
            if uid in self.versions:
                r = read_back(self.stack, uid, self.versions.pop(uid) + 1)
                assert r.status_code == 404, (r.status_code, r.text)
                self.read_back["deleted"] += 1


class NotificationsWorkflow(NOTIFICATIONS.as_state_machine()):
    stack = None

    def get_call_kwargs(self, case):
        return {"base_url": self.stack.consumer_url}

    def before_call(self, case):
        if case.operation.label == WAITING_READ:
            bounded_wait(case)


def run_stateful(workflow, stack):
    """Runs workflow's scenarios, derandomized (a fixed seed). Without shrinking: the servers keep
    what each scenario wrote, so a scenario replayed to shrink it meets another state and
    Hypothesis would report that instead of the failure."""
    workflow.stack = stack
    workflow.run(settings=hypothesis.settings(
        **STATEFUL, derandomize=True, database=None, deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck)))


def test_user_api_links_and_the_copy_on_8081(stack):
    run_stateful(UsersWorkflow, stack)
    # The links were followed: writes were read back on 8081, deletions too.
    assert UsersWorkflow.read_back["written"] > 0 and UsersWorkflow.read_back["deleted"] > 0, \
        UsersWorkflow.read_back


def settled(stack):
    """Whether every event written so far is in the copy: the outbox relayed, nothing pending on
    the consumer (its lag gauges, refreshed every 2 s)."""
    if stack.pg.sql("SELECT count(*) FROM outbox_pending")[0][0] != 0:
        return False
    text = requests.get(stack.consumer_url + "/metrics", timeout=5).text
    return all(f"{g} 0" in text.splitlines()
               for g in ("consumer_pending_messages", "consumer_ack_pending_messages"))


def test_notification_consumer_links(stack):
    # The copy must hold still while Hypothesis generates: a scenario replayed against a copy
    # that moved meanwhile would take another path (a 404 become a 200).
    poll(lambda: settled(stack), 30, "the copy to hold every event written")
    run_stateful(NotificationsWorkflow, stack)
