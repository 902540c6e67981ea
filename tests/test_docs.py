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
