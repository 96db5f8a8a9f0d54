"""deploy/observability/ stays true: the Prometheus rules load and pass their unit tests
(promtool, from Debian's prometheus package, which bootstrap installs), the dashboard is valid
Grafana JSON with its data source as a variable, every metric the rules and the dashboard use
is one that the running services export, with the labels they select on, and the package's
Prometheus server, scraping those services, evaluates the rules on them."""
import json
import re
import shutil
import subprocess
import time
import uuid

import pytest
import requests

import harness
from test_consumer_support import Stream, poll

OBS = harness.REPO_ROOT / "deploy" / "observability"
RULES = OBS / "rules.yml"
RULE_TESTS = OBS / "rules.test.yml"
DASHBOARD = OBS / "dashboard.json"

# Series Prometheus makes itself, not a service: `up` of every scrape target.
PROMETHEUS_OWN = {"up"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Words of PromQL that look like metric names.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "sum", "min", "max", "avg",
            "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|[A-Za-z_:][A-Za-z0-9_:]*|\S')


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: deploy/bootstrap.sh installs Debian's prometheus "
                    "package (apt-get install prometheus)")
    return path


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """The metric names a PromQL expression reads, each with the label names its matchers use.
    Functions, aggregation clauses, keywords, strings, ranges and numbers are skipped."""
    out = []
    toks = [t.group(0) for t in TOKEN.finditer(expr)]
    i = 0
    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t in GROUPING and nxt == "(":
            i = toks.index(")", i)          # the label list of by (...), on (...)
        elif re.match(r"[A-Za-z_:]", t) and nxt != "(" and t.lower() not in KEYWORDS:
            labels = set()
            if nxt.startswith("{"):
                labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", nxt))
                i += 1
            out.append((t, labels))
        elif t.startswith("{"):
            # A selector by matchers alone: {__name__="..."}.
            m = re.search(r'__name__\s*=\s*"([^"]+)"', t)
            if m:
                out.append((m.group(1), set()))
        i += 1
    return out


def rule_exprs() -> tuple[list[str], set[str], list[str]]:
    """The expressions of rules.yml (read line by line: the file keeps one shape, `expr:` with the
    expression on its line or in a `|` block), the names it records, and its alert names."""
    exprs, recorded, alerts = [], set(), []
    lines = RULES.read_text().splitlines()
    for n, line in enumerate(lines):
        m = re.match(r"\s*- record: (\S+)$", line)
        if m:
            recorded.add(m.group(1))
        m = re.match(r"\s*- alert: (\S+)$", line)
        if m:
            alerts.append(m.group(1))
        m = re.match(r"(\s*)expr: (.*)$", line)
        if not m:
            continue
        if m.group(2).strip() != "|":
            exprs.append(m.group(2))
            continue
        indent, block = len(m.group(1)), []
        for more in lines[n + 1:]:
            if more.strip() and len(more) - len(more.lstrip()) <= indent:
                break
            block.append(more)
        exprs.append("\n".join(block))
    return exprs, recorded, alerts


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))
    walk(d["panels"])
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", q)
            assert m, f"variable {v['name']}: {q!r} is not label_values(metric, label)"
            exprs.append(m.group(1))
    return exprs


def test_the_rules_load_and_every_alert_passes_its_unit_tests():
    tool = promtool()
    r = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([tool, "test", "rules", RULE_TESTS.name], cwd=OBS, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr

    # Every alert has a test in which it fires, and one in which it does not.
    _, _, alerts = rule_exprs()
    assert len(alerts) == len(set(alerts)) >= 15, alerts
    fires, quiet = set(), set()
    for block in RULE_TESTS.read_text().split("- eval_time:")[1:]:
        name = re.search(r"alertname: (\S+)", block).group(1)
        (quiet if re.search(r"exp_alerts: \[\]", block) else fires).add(name)
    assert set(alerts) - fires == set(), "alerts without a test where they fire"
    assert set(alerts) - quiet == set(), "alerts without a test where they stay quiet"
    for block in RULES.read_text().split("- alert: ")[1:]:
        name = block.split("\n", 1)[0]
        assert re.search(r"\n\s+severity: (warning|critical)\n", block), f"{name}: no severity"
        # An alert on absent() has no value or labels to show.
        assert re.search(r"\n\s+summary: .*\{\{ \$(value|labels)", block) or "absent(" in block, \
            f"{name}: a summary that shows the value or the labels"
        assert "description: " in block, f"{name}: no description"


def test_the_readme_section_is_true(tmp_path):
    """README's "Alerts and a dashboard": its scrape configuration is valid with the rules in
    place, and its table lists exactly the alerts of rules.yml."""
    readme = (harness.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Alerts and a dashboard"):]
    section = section[:section.index("\n## ", 3)]
    config = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    assert "rule_files: [/etc/prometheus/user-sync-rules.yml]" in config
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/user-sync-rules.yml", str(RULES)))
    r = subprocess.run([promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = set(re.findall(r"job_name: (\S+)", config))
    assert jobs == {"user-api", "outbox-relay", "notification-consumer", "audit"}
    # The one rule that names jobs names these.
    assert 'up{job=~"user-api|outbox-relay|notification-consumer|audit"}' in RULES.read_text()
    listed = set(re.findall(r"`([A-Z][A-Za-z]+)`", "\n".join(
        l.split("|")[1] for l in section.splitlines() if l.startswith("| `"))))
    _, _, alerts = rule_exprs()
    assert listed == set(alerts)


def test_the_dashboard_is_grafana_json_with_the_data_source_as_a_variable():
    d = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in d["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
    text = json.dumps(d)
    for what in ("relay_outbox_backlog", "relay_outbox_oldest_age_seconds", "relay_leader",
                 "relay_events_published_total", "relay_events_failed_total",
                 "consumer_events_applied_total", "consumer_pending_messages",
                 "consumer_commit_to_apply_seconds_bucket", "consumer_dlq_messages", "service_ready",
                 "audit_drift_users", 'http_requests_total{job=\\"user-api\\"}',
                 'http_requests_total{job=\\"notification-consumer\\"}',
                 "http_request_duration_seconds_bucket"):
        assert what in text, what


def scrape(url: str) -> dict[str, set[str]]:
    """Every series name on url/metrics, with the label names its series carry."""
    r = requests.get(url + "/metrics", timeout=5)
    assert r.status_code == 200, r.text[:300]
    names: dict[str, set[str]] = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})? ", line)
        assert m, line
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=\"", m.group(2) or ""))
        names.setdefault(m.group(1), set()).update(labels)
    return names


def metric(url: str, series: str) -> float | None:
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_every_metric_the_rules_and_the_dashboard_use_is_exported(db, nats, ferret, services):
    """The four processes with a little traffic (so that the labelled series exist), one poison
    event (so that the dead-letter gauge moves), each /metrics scraped; then a Prometheus on
    them."""
    dbname = f"notif_{uuid.uuid4().hex[:8]}"
    common = dict(db.env, NATS_URL=nats.url, LOG_LEVEL="info")
    relay = services.start("outbox-relay", dict(common, OUTBOX_RELAY_PORT=harness.free_port(),
                                                RELAY_BACKLOG_INTERVAL="100ms"))
    api = services.start("user-api", dict(common, USER_API_PORT=harness.free_port()))
    consumer = services.start("notification-consumer", {
        "NATS_URL": nats.url, "MONGODB_URI": ferret.uri, "MONGODB_DB": dbname,
        "NOTIFICATION_CONSUMER_PORT": harness.free_port(), "CONSUMER_LAG_INTERVAL": "100ms",
        "LOG_LEVEL": "info"})
    audit_port = harness.free_port()
    audit = services.start("audit", dict(db.env, MONGODB_URI=ferret.uri, MONGODB_DB=dbname,
                                         AUDIT_PORT=audit_port, AUDIT_RECHECK_AFTER="0",
                                         LOG_LEVEL="info"),
                           args=["--every", "1s"], port=audit_port)

    r = requests.post(api.url + "/users", json={"name": "Ada", "email": f"{dbname}@example.com"},
                      timeout=10)
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    assert requests.get(f"{api.url}/users/{uid}", timeout=10).status_code == 200
    assert requests.get(api.url + "/users", timeout=10).status_code == 200
    poll(lambda: requests.get(f"{consumer.url}/notifications/user/{uid}", timeout=10)
         .status_code == 200, 30, "the user in the copy")
    assert requests.get(consumer.url + "/notifications", timeout=10).status_code == 200
    Stream(nats).publish_raw("user.events.updated", b"{not json", {"Nats-Msg-Id": "poison-1"})
    poll(lambda: metric(consumer.url, "consumer_dlq_messages") == 1, 20,
         "the poison event in the DLQ gauge")
    assert metric(consumer.url, "consumer_lease_held") == 1
    assert metric(consumer.url, "consumer_lease_acquired_total") == 1
    poll(lambda: metric(audit.url, 'audit_runs_total{result="clean"}') or
         metric(audit.url, 'audit_runs_total{result="drift"}'), 30, "an audit pass")

    exported: dict[str, set[str]] = {}
    for s in (api, relay, consumer, audit):
        names = scrape(s.url)
        assert metric(s.url, "service_ready") == 1, s.name
        for n, labels in names.items():
            exported.setdefault(n, set()).update(labels)

    exprs, recorded, _ = rule_exprs()
    used = [(n, l, "rules") for e in exprs for n, l in selectors(e)]
    used += [(n, l, "dashboard") for e in dashboard_exprs() for n, l in selectors(e)]
    assert len({n for n, _, _ in used}) >= 30
    missing, bad_labels = [], []
    for name, labels, where in used:
        if ":" in name:
            assert name in recorded, f"{where} reads {name}, which no rule records"
            continue
        if name in PROMETHEUS_OWN:
            continue
        if name not in exported:
            missing.append(f"{where}: {name}")
        elif labels - exported[name] - TARGET_LABELS:
            bad_labels.append(f"{where}: {name} {sorted(labels - exported[name] - TARGET_LABELS)}")
    assert not missing, f"not exported by any service: {sorted(set(missing))}"
    assert not bad_labels, f"labels the series do not carry: {sorted(set(bad_labels))}"

    # A real Prometheus with the rules: the recording rules join the real series (the leader's
    # backlog, the lease holder's gauges), and the poison event makes ConsumerDeadLetters pend.
    prom = Prometheus({"user-api": api.url[7:], "outbox-relay": relay.url[7:],
                       "notification-consumer": consumer.url[7:], "audit": audit.url[7:]})
    try:
        prom.start()
        value = lambda q: [float(x["value"][1]) for x in prom.query(q)]  # noqa: E731
        poll(lambda: value("count(up == 1)") == [4], 20, "four targets up")
        poll(lambda: value('job:relay_leader:sum{job="outbox-relay"}') == [1], 20, "the leader")
        poll(lambda: value('job:relay_outbox_backlog:leader{job="outbox-relay"}') == [0], 20,
             "the leader's backlog")
        poll(lambda: value('job:consumer_dlq_messages:holder{job="notification-consumer"}') == [1],
             20, "the DLQ depth from the lease holder")
        alerts = poll(lambda: (a := {x["metric"]["alertname"] for x in prom.query("ALERTS")})
                      and "ConsumerDeadLetters" in a and a, 20, "ConsumerDeadLetters pending")
        assert not alerts & {"ServiceNotReady", "ServiceDown", "OutboxRelayNoLeader",
                             "OutboxRelayAbsent", "ConsumerNoLeaseHolder"}, alerts
    finally:
        prom.close()


class Prometheus(harness.Process):
    """The server of Debian's prometheus package, scraping the given targets every second under
    README's job names, with rules.yml evaluated every second."""
    name = "prometheus"

    def __init__(self, targets: dict[str, str]):
        super().__init__()
        self.port = harness.free_port()
        jobs = "".join(f"  - job_name: {job}\n    static_configs: [{{targets: ['{t}']}}]\n"
                       for job, t in targets.items())
        (self.dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\nscrape_configs:\n{jobs}")

    def _argv(self):
        path = shutil.which("prometheus") or "/usr/bin/prometheus"
        return [path, f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]

    def _ready(self):
        return requests.get(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).status_code == 200

    def query(self, q: str) -> list[dict]:
        r = requests.get(f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": q},
                         timeout=5)
        assert r.status_code == 200, r.text
        return r.json()["data"]["result"]


def test_service_ready_follows_readyz(db, nats, services):
    """service_ready says what /readyz says, at each scrape: the relay without NATS is not ready."""
    relay = services.start("outbox-relay", dict(db.env, NATS_URL=nats.url,
                                                OUTBOX_RELAY_PORT=harness.free_port()))
    poll(lambda: requests.get(relay.url + "/readyz", timeout=5).status_code == 200, 20,
         "the relay ready")
    assert metric(relay.url, "service_ready") == 1
    nats.stop()
    poll(lambda: requests.get(relay.url + "/readyz", timeout=5).status_code == 503, 20,
         "the relay not ready")
    assert metric(relay.url, "service_ready") == 0
    nats.start()
    poll(lambda: metric(relay.url, "service_ready") == 1, 30, "the relay ready again")
