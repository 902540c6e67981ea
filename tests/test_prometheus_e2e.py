"""A real Prometheus scraping the example under gunicorn, with the shipped rules and dashboard.

The module starts the example project (gunicorn, 2 workers, multiprocess metrics) and
``/usr/bin/prometheus`` (scrape and evaluation every second, exemplar storage on, a temporary
TSDB) loading a copy of ``grafana/alerts/django-sent-otel.rules.yml`` whose ``for:`` durations
are shortened. Clients send full reads of every view; later they also abandon CSV exports and
downloads with a TCP reset. Then, through Prometheus' HTTP API:

- every rule is loaded and evaluates without error, and no failure-ratio alert is active while
  nothing is aborted (with the alerts' traffic guards already met);
- the failure-ratio alerts become pending or firing once aborts are injected;
- every query of the Grafana dashboard (panels and ``label_values`` variables, with Grafana's
  variables and macros substituted) returns data.

Every wait polls a condition with a deadline; every process is stopped (process group) at the end.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from example.demo import ExampleServer, request
from tests.harness.servers import free_port, parent_death_signal
from tests.harness.tools import need_binary
from tests.harness.waiting import wait_for
from tests.test_docs import streaming_blocks

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
RULES = GRAFANA / "alerts" / "django-sent-otel.rules.yml"
DASHBOARD = GRAFANA / "dashboards" / "django-sent-otel.json"
PROMETHEUS_CONFIG = GRAFANA / "prometheus.yml"
DEFAULT_JOB = "django-example"

STARTUP_TIMEOUT = 60.0
#: Prometheus evaluates every second: polling it faster only adds load.
POLL = 0.25
CONDITION_TIMEOUT = 60.0
#: Upper bounds of the background traffic, whatever happens to the tests.
LOAD_SECONDS = 180.0
LOAD_REQUESTS = 6000
#: The rules' ``for:`` in the test copy: long enough to see "pending", short enough to wait.
SHORT_FOR = "2s"
#: Dashboard macros -> concrete values for an instant query.
MACROS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
    "__interval_ms": "15000",
}

FULL_READS = ("/", "/api/articles/2024/", "/export.csv", "/download/", "/no-such-page/")
ABORTS = ("/export.csv", "/download/", "/export.csv")

T = TypeVar("T")


def prometheus_binary() -> str | None:
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None


# --- processes ---------------------------------------------------------------------------


class Prometheus:
    """``prometheus`` on 127.0.0.1 with a temporary TSDB, in its own process group."""

    def __init__(self, binary: str, workdir: Path, config: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--enable-feature=exemplar-storage",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=parent_death_signal(),  # noqa: PLW1509 - no thread started yet
            )
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"prometheus exited ({self.process.returncode}):\n{self.log_tail()}")
        try:
            return self.client.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str) -> Any:
        response = self.client.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/query", params={"query": expr})
        body = response.json()
        if body.get("status") != "success":
            pytest.fail(f"Prometheus rejected the query:\n{expr}\n{body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class Load:
    """Background clients: full reads of every view, and aborted ones once ``aborting`` is set."""

    server: ExampleServer
    stop: threading.Event = field(default_factory=threading.Event)
    aborting: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    aborted: int = 0
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, clients: int = 2) -> None:
        for n in range(clients):
            thread = threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        while not self.stop.is_set() and time.monotonic() < deadline:
            steps = [("full", p) for p in FULL_READS]
            if self.aborting.is_set():
                steps += [("abort", p) for p in ABORTS]
            for kind, path in steps:
                if self.stop.is_set() or self.sent >= LOAD_REQUESTS:
                    return
                try:
                    request(self.server.port, kind, path)
                except (OSError, AssertionError) as exc:
                    with self.lock:
                        self.errors.append(f"{kind} {path}: {exc!r}")
                    self.stop.wait(0.5)  # back off; the tests report the errors
                    continue
                with self.lock:
                    self.sent += 1
                    self.aborted += kind == "abort"

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=40)


# --- the stack ---------------------------------------------------------------------------


@dataclass
class Stack:
    server: ExampleServer
    prometheus: Prometheus
    load: Load
    job: str
    rules: dict[str, Any]

    def diagnostics(self) -> str:
        return (
            f"\n--- load: sent={self.load.sent} aborted={self.load.aborted} "
            f"errors={self.load.errors[:5]}\n--- gunicorn log:\n{self.server.log_tail(15)}"
            f"\n--- prometheus log:\n{self.prometheus.log_tail(15)}"
        )


def shorten_for(rules: dict[str, Any]) -> dict[str, Any]:
    """A copy of the rule file with every ``for:`` shortened (and no ``keep_firing_for``)."""
    copy: dict[str, Any] = json.loads(json.dumps(rules))
    for group in copy.get("groups", []):
        for rule in group.get("rules", []):
            if "for" in rule:
                rule["for"] = SHORT_FOR
            rule.pop("keep_firing_for", None)
    return copy


def job_name() -> str:
    """The job name of grafana/prometheus.yml, so the test scrapes exactly like the stack."""
    try:
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        return str(config["scrape_configs"][0]["job_name"])
    except (OSError, KeyError, IndexError, TypeError):
        return DEFAULT_JOB


def promtool_check(args: list[str]) -> None:
    promtool = shutil.which("promtool")
    if promtool:
        result = subprocess.run(
            [promtool, "check", *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = prometheus_binary()
    need_binary(binary, "prometheus")
    assert binary is not None
    for path in (RULES, DASHBOARD):
        if not path.is_file():
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{path.relative_to(ROOT)} is missing")
            pytest.skip(f"{path.relative_to(ROOT)} is not written yet")
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    job = job_name()
    rules = yaml.safe_load(RULES.read_text())
    rules_copy = workdir / "rules.yml"
    rules_copy.write_text(yaml.safe_dump(shorten_for(rules), sort_keys=False))
    promtool_check(["rules", str(rules_copy)])

    (workdir / "app").mkdir()
    server = ExampleServer(
        workdir / "app",
        port=free_port(),
        env={"EXAMPLE_CACHE_DIR": str(workdir / "cache"), "EXAMPLE_EXPORT_ROWS": "5000"},
        start_timeout=STARTUP_TIMEOUT,
    )
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_copy)],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "scrape_interval": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
            }
        ],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    promtool_check(["config", str(config_path)])

    prometheus: Prometheus | None = None
    load = Load(server)
    try:
        server.start()
        prometheus = Prometheus(binary, workdir, config_path)
        wait_for(prometheus.ready, STARTUP_TIMEOUT, what="prometheus to be ready", interval=POLL)
        load.start()
        yield Stack(server, prometheus, load, job, rules)
    finally:
        load.close()
        if prometheus is not None:
            prometheus.stop()
        server.stop()


# --- queries of the dashboard -------------------------------------------------------------


def substitute(expr: str, job: str) -> str:
    """Grafana's macros and variables -> concrete PromQL for an instant query."""

    def macro(match: re.Match[str]) -> str:
        return MACROS.get(match.group(1), match.group(0))

    expr = re.sub(r"\$\{(__\w+?)(?::\w+)?\}", macro, expr)
    expr = re.sub(r"\$(__\w+)", macro, expr)

    def variable(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return job if name == "job" else ".+"

    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)", variable, expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(job: str) -> list[tuple[str, str]]:
    """(what, PromQL) for every panel target and every ``label_values`` variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries: list[tuple[str, str]] = []
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                what = f"panel {panel.get('title')!r} ({target.get('refId', '?')})"
                queries.append((what, substitute(expr, job)))
    label_values = re.compile(r"^\s*label_values\((?P<sel>.+),\s*(?P<label>\w+)\s*\)\s*$", re.S)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        match = label_values.match(query or "")
        if match:
            expr = f"group by ({match['label']}) ({match['sel']})"
            queries.append((f"variable ${variable.get('name')}", substitute(expr, job)))
    return queries


def test_substitute_grafana_variables_and_macros() -> None:
    expr = (
        'sum(rate(m{job=~"$job", instance=~"${instance}", route=~"[[route]]"}'
        "[$__rate_interval])) / increase(m[${__range}])"
    )
    assert substitute(expr, "django-example") == (
        'sum(rate(m{job=~"django-example", instance=~".+", route=~".+"}[1m])) / increase(m[5m])'
    )


# --- the tests, in the order they run: control, aborts, dashboard ----------------------


def _alerts(stack: Stack) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = stack.prometheus.api("alerts")["alerts"]
    return alerts


def _failure_ratio_alerts(stack: Stack) -> list[str]:
    names = [
        rule["alert"]
        for group in stack.rules.get("groups", [])
        for rule in group.get("rules", [])
        if "alert" in rule and "FailureRatio" in rule["alert"]
    ]
    assert names, "grafana's rules define no *FailureRatio* alert"
    return names


def _rules_after(stack: Stack, since: float) -> list[dict[str, Any]] | None:
    """All loaded rules once every one was evaluated after ``since`` (epoch seconds)."""
    rules = [r for g in stack.prometheus.api("rules")["groups"] for r in g["rules"]]
    for rule in rules:
        evaluated = rule.get("lastEvaluation", "0001-01-01T00:00:00Z")
        if evaluated.startswith("0001") or _epoch(evaluated) <= since:
            return None
    return rules


def _epoch(timestamp: str) -> float:
    # Prometheus gives up to nanoseconds; Python 3.10 parses exactly 3 or 6 fraction digits.
    cleaned = re.sub(r"\.(\d+)", lambda m: "." + m[1][:6].ljust(6, "0"), timestamp)
    cleaned = cleaned.replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(cleaned).timestamp()


def test_rules_load_healthy_and_stay_quiet_without_aborts(stack: Stack) -> None:
    # The tests that start aborts run after this one (marker last_in_module).
    assert not stack.load.aborting.is_set(), "aborts started before the control phase"
    prometheus, job = stack.prometheus, stack.job
    wait_for(
        lambda: [
            t
            for t in prometheus.api("targets")["activeTargets"]
            if t["labels"].get("job") == job and t["health"] == "up"
        ],
        STARTUP_TIMEOUT,
        what="the example target to be up",
        interval=POLL,
    )
    # Enough clean traffic for the ratio alerts' guards (at least 0.1 responses/s per route).
    wait_for(
        lambda: prometheus.query(
            f'sum by (route) (rate(django_http_responses_delivered_total{{job="{job}",'
            f'route="export.csv"}}[5m])) >= 0.1'
        ),
        CONDITION_TIMEOUT,
        what="clean traffic to meet the failure-ratio alerts' guards",
        interval=POLL,
        details=stack.diagnostics,
    )
    since = time.time()
    rules = wait_for(
        lambda: _rules_after(stack, since),
        CONDITION_TIMEOUT,
        what="every rule to be evaluated again",
        interval=POLL,
    )
    expected = sum(len(g.get("rules", [])) for g in stack.rules.get("groups", []))
    assert len(rules) == expected, [r["name"] for r in rules]
    unhealthy = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    names = set(_failure_ratio_alerts(stack))
    active = [a for a in _alerts(stack) if a["labels"].get("alertname") in names]
    assert not active, f"a failure-ratio alert is active without any abort: {active}"
    assert (
        prometheus.query(f'sum(django_http_response_delivery_failures_total{{job="{job}"}})') == []
    )


@pytest.mark.last_in_module
def test_failure_ratio_alerts_fire_after_aborts(stack: Stack) -> None:
    stack.load.aborting.set()
    names = _failure_ratio_alerts(stack)

    def active() -> dict[str, str] | None:
        states: dict[str, str] = {}
        for alert in _alerts(stack):
            name = alert["labels"].get("alertname")
            if name in names and alert["state"] in ("pending", "firing"):
                states[name] = alert["state"]
        return states if set(states) == set(names) else None

    states = wait_for(
        active,
        CONDITION_TIMEOUT,
        what=f"{names} to be pending or firing",
        interval=POLL,
        details=stack.diagnostics,
    )
    assert set(states) == set(names)
    per_route = [
        a
        for a in _alerts(stack)
        if a["labels"].get("alertname") in names and a["labels"].get("route")
    ]
    if per_route:  # the per-route alert names the routes that were aborted
        assert {a["labels"]["route"] for a in per_route} <= {"export.csv", "download/"}
    rules = [r for g in stack.prometheus.api("rules")["groups"] for r in g["rules"]]
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


@pytest.mark.last_in_module
def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    """The dashboard's queries, and docs/streaming.md's examples exactly as shown."""
    stack.load.aborting.set()
    queries = dashboard_queries(stack.job)
    queries += [
        (f"docs/streaming.md query {i}", q) for i, q in enumerate(streaming_blocks("promql"))
    ]
    assert queries, "no query found in the dashboard"
    failures = stack.prometheus.query("sum(django_http_response_delivery_failures_total)")
    if not failures:  # aborts just started: wait until Prometheus scraped some failures
        wait_for(
            lambda: stack.prometheus.query(
                "sum(rate(django_http_response_delivery_failures_total[1m])) > 0"
            ),
            CONDITION_TIMEOUT,
            what="delivery failures to be scraped",
            interval=POLL,
            details=stack.diagnostics,
        )

    pending = dict(queries)

    def all_have_data() -> bool:
        for what, expr in list(pending.items()):
            # Data: at least one series with a number (not NaN from an empty ratio).
            values = [r["value"][1] for r in stack.prometheus.query(expr)]
            if any(v.lower() != "nan" for v in values):
                del pending[what]
        return not pending

    def empty() -> str:
        queries = "\n".join(f"- {what}:\n    {expr}" for what, expr in pending.items())
        return f"dashboard queries without data:\n{queries}{stack.diagnostics()}"

    wait_for(all_have_data, CONDITION_TIMEOUT, what="data", interval=POLL, details=empty)
