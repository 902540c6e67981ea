"""The Grafana dashboard, the alert rules' PromQL and the compose stack against the real package.

Every PromQL expression shipped in ``grafana/`` (dashboard targets, ``label_values()`` variable
queries, alert rules) is parsed, and may name only series that ``DeliveryMetrics`` really
exports, with only their own labels plus the ``job``/``instance`` labels a scrape adds. The
exported set is built by recording deliveries on a fresh registry, never typed by hand, so a
renamed metric or label breaks this test instead of a user's dashboard.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from django_sent_otel.delivery import Delivery
from django_sent_otel.metrics import DeliveryMetrics
from tests.harness.tools import need_binary

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "django-sent-otel.json"
RULES = GRAFANA / "alerts" / "django-sent-otel.rules.yml"
COMPOSE = GRAFANA / "docker-compose.yml"
PROMETHEUS_CONFIG = GRAFANA / "prometheus.yml"

UID = "django-sent-otel"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_ANNOTATIONS = {"type": "grafana", "uid": "-- Grafana --"}
SCRAPE_LABELS = frozenset({"job", "instance"})
UNITS = frozenset({"reqps", "percentunit", "s", "Bps", "short"})
# Grafana macros become concrete durations before parsing; `$job`-style variables only ever
# appear inside label matcher strings, which are valid PromQL as they are.
MACROS = {"$__rate_interval": "5m", "$__range": "1h"}
RANGE_FUNCTIONS = frozenset({"rate", "increase", "irate"})
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$", re.DOTALL)


@dataclass(frozen=True)
class Exported:
    """What the package exports: label names per sample name, families, family types."""

    labels: dict[str, frozenset[str]]
    families: dict[str, frozenset[str]]
    types: dict[str, str]

    def family_of(self, name: str) -> str:
        return next(fam for fam, names in self.families.items() if name in names)


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    target: dict[str, Any]


def _exporting_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = DeliveryMetrics(registry=registry, namespace="django")
    common: dict[str, Any] = {"method": "GET", "route": "a/", "status_code": 200, "duration": 0.1}
    metrics.record(
        Delivery(outcome="delivered", reason=None, bytes_sent=10, send_duration=0.05, **common)
    )
    metrics.record(
        Delivery(
            outcome="client_disconnect",
            reason="client_disconnect",
            bytes_sent=5,
            send_duration=0.05,
            **common,
        )
    )
    return registry


@pytest.fixture(scope="module")
def exported() -> Exported:
    labels: dict[str, set[str]] = {}
    families: dict[str, set[str]] = {}
    types: dict[str, str] = {}
    for family in _exporting_registry().collect():
        types[family.name] = family.type
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
            families.setdefault(family.name, set()).add(sample.name)
    return Exported(
        labels={name: frozenset(names) for name, names in labels.items()},
        families={name: frozenset(names) for name, names in families.items()},
        types=types,
    )


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))  # rows hold their panels when collapsed


def graph_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in iter_panels(dashboard["panels"]) if p["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def dashboard_queries() -> list[Query]:
    """Every panel target's expr, and the selector of every ``label_values()`` variable."""
    dashboard = load_dashboard()
    queries = [
        Query(f"panel {panel['id']} ({panel['title']}) {target['refId']}", target["expr"], target)
        for panel in graph_panels(dashboard)
        for target in panel["targets"]
    ]
    for name, variable in variables(dashboard).items():
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable_query(variable))
            assert match, f"variable {name} is not a label_values() query"
            queries.append(Query(f"variable {name}", match["selector"], variable))
    return queries


def rule_queries() -> list[Query]:
    return [
        Query(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"], rule)
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
    ]


def concrete(expr: str) -> str:
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    assert "$__" not in expr, f"unknown Grafana macro in {expr!r}"
    return expr


@dataclass
class Parsed:
    selectors: list[promql_parser.VectorSelector]
    grouping: set[str]
    calls: list[promql_parser.Call]


def parse(expr: str) -> Parsed:
    parsed = Parsed([], set(), [])

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            parsed.selectors.append(node)
        elif isinstance(node, promql_parser.Call):
            parsed.calls.append(node)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            parsed.grouping.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                parsed.grouping.update(node.modifier.matching.labels)
            parsed.grouping.update(node.modifier.group_labels or ())

    promql_parser.walk(promql_parser.parse(concrete(expr)), visit)
    return parsed


def metric(selector: promql_parser.VectorSelector) -> str:
    assert selector.name, f"{selector} does not name its metric"
    return selector.name


def matchers(selector: promql_parser.VectorSelector) -> dict[str, tuple[Any, str]]:
    return {m.name: (m.op, m.value) for m in selector.matchers.matchers}


ALL_QUERIES = dashboard_queries() + rule_queries()


@pytest.mark.parametrize("query", ALL_QUERIES, ids=[q.where for q in ALL_QUERIES])
def test_queries_use_only_exported_metrics_and_labels(query: Query, exported: Exported) -> None:
    parsed = parse(query.expr)
    assert parsed.selectors, "no metric selector"
    used_labels: set[str] = set(SCRAPE_LABELS)
    for selector in parsed.selectors:
        assert metric(selector) in exported.labels, f"{selector} is not exported"
        allowed = exported.labels[metric(selector)] | SCRAPE_LABELS
        assert set(matchers(selector)) <= allowed, f"{selector}: labels not in {sorted(allowed)}"
        used_labels |= allowed
    assert parsed.grouping <= used_labels, f"grouping by {parsed.grouping - used_labels}"
    if query.where.startswith("variable "):
        label = LABEL_VALUES.match(variable_query(query.target))["label"]  # type: ignore[index]
        assert label in used_labels


@pytest.mark.parametrize("query", ALL_QUERIES, ids=[q.where for q in ALL_QUERIES])
def test_functions_get_the_right_kind_of_series(query: Query, exported: Exported) -> None:
    """rate()/increase() only over counters and histogram series; quantiles keep ``le``."""
    for call in parse(query.expr).calls:
        if call.func.name in RANGE_FUNCTIONS:
            (selector,) = parse(str(call.args[0])).selectors
            assert exported.types[exported.family_of(metric(selector))] in {"counter", "histogram"}
            assert not metric(selector).endswith("_created")
        if call.func.name == "histogram_quantile":
            inner = parse(str(call.args[1]))
            assert "le" in inner.grouping, f"{call} aggregates le away"
            assert all(metric(s).endswith("_bucket") for s in inner.selectors)


@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda q: q.where)
def test_dashboard_queries_honour_the_variables(query: Query, exported: Exported) -> None:
    instant = bool(query.target.get("instant")) and not query.target.get("range", False)
    for window in re.findall(r"\[([^\]]*)\]", STRING.sub('""', query.expr)):
        # $__range only in instant queries (a table over the dashboard's whole time range).
        assert window == "$__rate_interval" or (window == "$__range" and instant), window
    is_job_variable = query.where == "variable job"
    for selector in parse(query.expr).selectors:
        found = matchers(selector)
        if is_job_variable:
            continue  # the first variable of the chain
        assert found.get("job") == (promql_parser.MatchOp.Re, "$job"), str(selector)
        if query.where == "variable instance":
            continue
        assert found.get("instance") == (promql_parser.MatchOp.Re, "$instance"), str(selector)
        if "route" in exported.labels[metric(selector)] and query.where != "variable route":
            assert found.get("route") == (promql_parser.MatchOp.Re, "$route"), str(selector)


def test_every_exported_family_is_on_the_dashboard(exported: Exported) -> None:
    shown = {metric(s) for q in dashboard_queries() for s in parse(q.expr).selectors}
    for family, names in exported.families.items():
        assert shown & names, f"{family} is not on the dashboard"


def test_dashboard_is_importable_and_provisionable() -> None:
    dashboard = load_dashboard()
    assert dashboard["id"] is None
    assert dashboard["uid"] == UID
    assert dashboard["schemaVersion"] == 39
    assert "django-sent-otel" in dashboard["tags"]
    (ds_input,) = dashboard["__inputs"]
    assert ds_input["name"] == "DS_PROMETHEUS"
    assert (ds_input["type"], ds_input["pluginId"]) == ("datasource", "prometheus")
    required = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= required
    panel_types = {p["type"] for p in graph_panels(dashboard)}
    assert panel_types <= {r["id"] for r in dashboard["__requires"] if r["type"] == "panel"}
    # The input only picks the variable's default, so an unresolved input (provisioning from
    # file) cannot break a query: every query goes through the variable.
    text = DASHBOARD.read_text()
    assert text.count("${DS_PROMETHEUS}") == 1
    assert variables(dashboard)["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"


def test_variables_are_chained() -> None:
    found = variables(load_dashboard())
    assert list(found) == ["datasource", "job", "instance", "route"]
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    for name, all_value in {"job": ".+", "instance": ".+", "route": ".*"}.items():
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["includeAll"] is True
        assert variable["allValue"] == all_value
    assert "$job" in variable_query(found["instance"])
    assert {"$job", "$instance"} <= set(re.findall(r"\$\w+", variable_query(found["route"])))


def _datasources(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from _datasources(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasources(item)


def test_every_datasource_is_the_variable() -> None:
    dashboard = load_dashboard()
    found = list(_datasources({k: v for k, v in dashboard.items() if k != "annotations"}))
    assert found
    assert all(ds == DATASOURCE for ds in found), [ds for ds in found if ds != DATASOURCE]
    for annotation in dashboard["annotations"]["list"]:
        assert annotation["datasource"] in (DATASOURCE, BUILTIN_ANNOTATIONS)
    for panel in graph_panels(dashboard):
        assert panel["datasource"] == DATASOURCE
        assert panel["targets"]
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"])


def test_panels_have_ids_units_and_layout() -> None:
    panels = list(iter_panels(load_dashboard()["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[x, y]}"
                cells[x, y] = panel["id"]
        if panel["type"] != "row":
            assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, panel["title"]
            assert panel.get("description"), panel["title"]


def test_latency_graphs_show_exemplars() -> None:
    latency = [
        t
        for p in graph_panels(load_dashboard())
        if p["type"] == "timeseries"
        for t in p["targets"]
        if "histogram_quantile" in t["expr"]
    ]
    assert len(latency) >= 4  # p50/p95/p99 until delivered, p95 send phase
    assert all(t.get("exemplar") is True for t in latency)
    assert any("send_duration" in t["expr"] for t in latency)


def test_exported_metrics_pass_promtool_lint() -> None:
    promtool = shutil.which("promtool")
    need_binary(promtool, "promtool")
    assert promtool is not None
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(_exporting_registry()),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert not result.stdout.strip(), result.stdout.decode()


def test_dashboard_queries_parse_in_prometheus(tmp_path: Path) -> None:
    """The same expressions through Prometheus's own parser (as recording rules)."""
    promtool = shutil.which("promtool")
    need_binary(promtool, "promtool")
    assert promtool is not None
    rules = [
        {"record": f"dashboard:query_{n}", "expr": concrete(q.expr)}
        for n, q in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the example stack: prometheus.yml, provisioning, docker-compose.yml ----------------------


def test_prometheus_config_scrapes_the_example_app() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    (scrape,) = config["scrape_configs"]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["scrape_interval"] == "5s"
    assert scrape["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]
    assert [GRAFANA / path for path in config["rule_files"]] == [RULES]
    assert "--enable-feature=exemplar-storage" in PROMETHEUS_CONFIG.read_text()


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path (relative to grafana/) of a service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = (GRAFANA / source).resolve()
    return found


def _host_path(mounts: dict[str, Path], container_path: str) -> Path:
    for target, source in mounts.items():
        if container_path == target or container_path.startswith(target + "/"):
            return source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted")


def test_compose_stack_is_wired() -> None:
    services = load_yaml(COMPOSE)["services"]
    assert set(services) == {"prometheus", "grafana", "jaeger"}

    prometheus = services["prometheus"]
    assert prometheus["network_mode"] == "host"  # scrapes 127.0.0.1:8000 as the config says
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    (config_flag,) = [c for c in prometheus["command"] if c.startswith("--config.file=")]
    config_path = config_flag.split("=", 1)[1]
    mounts = _mounts(prometheus)
    assert _host_path(mounts, config_path) == PROMETHEUS_CONFIG
    config_dir = config_path.rsplit("/", 1)[0]
    for rule_file in load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
        assert _host_path(mounts, f"{config_dir}/{rule_file}") == RULES

    jaeger = services["jaeger"]
    published = {p.rsplit(":", 1)[-1] for p in jaeger["ports"]}
    assert {"4318", "16686"} <= published

    grafana = services["grafana"]
    mounts = _mounts(grafana)
    for source in mounts.values():
        assert source.exists(), source
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path(mounts, home) == DASHBOARD
    provisioning = _host_path(mounts, "/etc/grafana/provisioning")
    (provider,) = load_yaml(provisioning / "dashboards" / "dashboards.yml")["providers"]
    assert _host_path(mounts, provider["options"]["path"]) == DASHBOARD.parent

    datasources = {
        ds["type"]: ds
        for ds in load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    }
    prom, jaeger_ds = datasources["prometheus"], datasources["jaeger"]
    assert prom["uid"] and jaeger_ds["uid"]
    assert prom["isDefault"] is True
    assert prom["url"].endswith(":9090")
    assert "host.docker.internal:host-gateway" in grafana["extra_hosts"]
    assert jaeger_ds["url"] == "http://jaeger:16686"
    (link,) = prom["jsonData"]["exemplarTraceIdDestinations"]
    assert link == {**link, "name": "trace_id", "datasourceUid": jaeger_ds["uid"]}
