"""The README's metric table and settings list are checked against what the code really does."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from django_sent_otel.conf import Settings
from django_sent_otel.delivery import Delivery
from django_sent_otel.metrics import DeliveryMetrics
from tests.harness.names import DELIVERED, STREAM_ERROR

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def readme_metrics() -> dict[str, tuple[str, set[str]]]:
    block = README.split("<!-- metrics:start -->")[1].split("<!-- metrics:end -->")[0]
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
    assert readme_metrics() == exported()


def test_every_setting_is_documented() -> None:
    names = [n for n in vars(Settings) if n.isupper()]
    assert names
    for name in names:
        assert re.search(rf"^### `SENT_OTEL_{name}: [^`]+`$", README, re.M), name


def readme_otel_metrics() -> dict[str, tuple[str, str]]:
    block = README.split("<!-- otel-metrics:start -->")[1].split("<!-- otel-metrics:end -->")[0]
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
    assert readme_otel_metrics() == found
