"""The docs' metric tables, settings list and streaming recipes are checked against what the
code really does; the README is a front page that repeats the docs' setup recipes."""

from __future__ import annotations

import re
import sys
import types
from typing import Any

import promql_parser
from django.test import override_settings
from django.urls import path
from prometheus_client import CollectorRegistry

from django_sent_otel.asgi import get_asgi_application
from django_sent_otel.conf import Settings
from django_sent_otel.delivery import Delivery
from django_sent_otel.metrics import DeliveryMetrics
from tests.harness.asgi import serve
from tests.harness.deliveries import Deliveries
from tests.harness.docs import ROOT, between, page, recipe
from tests.harness.names import (
    DELIVERED,
    STREAM_ERROR,
    TIME_TO_FIRST_BYTE,
    UNDELIVERED_DURATION,
    sample,
)


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    block = between(page("metrics"), "metrics")
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in block.strip().splitlines()[2:]:
        name, kind, labels, _meaning = (c.strip() for c in line.strip("|").split("|"))
        label_set = set() if labels == "(none)" else {x.strip() for x in labels.split(",")}
        rows[name.strip("`")] = (kind, label_set)
    return rows


def exported() -> dict[str, tuple[str, set[str]]]:
    registry = CollectorRegistry()
    metrics = DeliveryMetrics(registry=registry)
    metrics.record(Delivery(DELIVERED, None, "GET", "a/", 200, 1, 0.1, 0.1))
    metrics.record(Delivery(STREAM_ERROR, STREAM_ERROR, "GET", "a/", 200, 1, 0.1, 0.1))
    families: dict[str, tuple[str, set[str]]] = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        families[name] = (family.type, labels)
    return families


def test_metric_table_matches_the_registry() -> None:
    assert documented_metrics() == exported()


def test_every_setting_is_documented() -> None:
    names = [n for n in vars(Settings) if n.isupper()]
    text = page("settings")
    assert names
    for name in names:
        assert re.search(rf"^### `SENT_OTEL_{name}: [^`]+`$", text, re.M), name


def documented_otel_metrics() -> dict[str, tuple[str, str]]:
    block = between(page("otel-metrics"), "otel-metrics")
    rows: dict[str, tuple[str, str]] = {}
    for line in block.strip().splitlines()[2:]:
        name, instrument, unit, _attributes, _meaning = (
            c.strip() for c in line.strip("|").split("|")
        )
        rows[name.strip("`")] = (instrument, unit.strip("`"))
    return rows


def test_otel_metric_table_matches_the_instruments() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from django_sent_otel.otel_metrics import OtelDeliveryMetrics

    reader = InMemoryMetricReader()
    metrics = OtelDeliveryMetrics(MeterProvider(metric_readers=[reader]))
    metrics.record(
        Delivery("delivered", None, "GET", "a/", 200, 1, 0.1, 0.1, 0.05, 1), returned=True
    )
    metrics.record(
        Delivery("stream_error", "stream_error", "GET", "a/", 200, 1, 0.1, 0.1), returned=True
    )
    data = reader.get_metrics_data()
    assert data is not None
    kinds = {"Sum": "Counter", "Histogram": "Histogram"}
    found = {
        m.name: (kinds[type(m.data).__name__], m.unit)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert documented_otel_metrics() == found


def streaming_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of docs/streaming.md, exactly as shown."""
    section = page("streaming")
    return re.findall(rf"^```{language}\n(.*?)^```$", section, re.M | re.S)


async def test_streaming_recipe_reports_first_byte_and_chunks(
    deliveries: Deliveries, registry: CollectorRegistry
) -> None:
    """The SSE view of the streaming section, served through the ASGI wrapper as shown."""
    (code,) = streaming_blocks("python")
    namespace: dict[str, Any] = {"__name__": "readme_streaming"}
    exec(compile(code, "docs/streaming.md", "exec"), namespace)
    urls = types.ModuleType("tests_docs_streaming_urls")
    urls.urlpatterns = [path("chat/", namespace["chat"])]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    try:
        with override_settings(ROOT_URLCONF=urls.__name__):
            sent, received = await serve(get_asgi_application(), "/chat/")
    finally:
        del sys.modules[urls.__name__]
    assert (b"X-Accel-Buffering", b"no") in sent[0]["headers"]
    (d,) = deliveries
    assert (d.outcome, d.route, d.chunks, d.bytes_sent) == (DELIVERED, "chat/", 3, received)
    assert d.time_to_first_byte is not None and 0.05 <= d.time_to_first_byte <= d.duration
    assert sample(registry, f"{TIME_TO_FIRST_BYTE}_count", method="GET", route="chat/") == 1


def test_streaming_queries_parse_and_name_exported_series() -> None:
    """Both PromQL examples parse and read the histograms' buckets (they run against a real
    Prometheus in ``tests/test_prometheus_e2e.py``)."""
    queries = streaming_blocks("promql")
    assert len(queries) == 2
    names = {TIME_TO_FIRST_BYTE + "_bucket", UNDELIVERED_DURATION + "_bucket"}
    for query in queries:
        parsed = promql_parser.parse(query.strip())
        found: list[str] = []

        def visit(node: Any, found: list[str] = found) -> None:
            if isinstance(node, promql_parser.VectorSelector) and node.name:
                found.append(node.name)

        promql_parser.walk(parsed, visit)
        assert found and set(found) <= names, (query, found)


def test_the_readme_is_a_front_page_showing_the_docs_recipes() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    setup = page("setup")
    # The README repeats these recipes verbatim; the docs' copies are the ones the tests run.
    for name in ("install", "installed-apps", "middleware", "asgi", "urls"):
        assert recipe(setup, name) in readme, name
    assert recipe(page("traces"), "tracing") in readme
    assert "make demo" in readme.split("\n## ")[0] and "make test" in readme.split("\n## ")[0]


def test_every_public_name_is_in_the_api_reference() -> None:
    import django_sent_otel

    api = page("api")
    for name in django_sent_otel.__all__:
        assert f"django_sent_otel.{name}" in api, name


def test_development_commands_exist() -> None:
    """Every ``make`` target and ``python -m`` module the development and performance pages
    list is one the Makefile and the repository have (running them is what CI and the
    benchmarks do; this keeps the lists from naming what is gone)."""
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+):", makefile, re.MULTILINE))
    text = page("development") + page("performance")
    named = set(re.findall(r"^make ([a-z0-9-]+)", text, re.MULTILINE))
    assert {"test", "bench-instructions"} <= named
    assert named <= targets, named - targets
    modules = set(re.findall(r"python -m (benchmarks(?:\.[a-z_]+)?)", text))
    assert "benchmarks.chunk" in modules
    for module in modules:
        base = ROOT / module.replace(".", "/")
        assert base.with_suffix(".py").is_file() or (base / "__main__.py").is_file(), module
