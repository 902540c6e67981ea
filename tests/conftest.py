"""Fixtures shared by every test; the helpers they use live in :mod:`tests.harness`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from tests import slots
from tests.harness.deliveries import Deliveries, recording
from tests.harness.venvs import distributions as built_distributions


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order each module's tests after pytest-randomly shuffled them.

    Tests of the real-server pool (fixture ``servers``, parameter ``kind``) run kind by kind,
    the kinds in shuffled order, each kind's cells in the order they are declared: one server
    per kind serves them all and its last cell ("after-stop") stops it and checks every record
    it left. Tests marked ``last_in_module`` run after the other tests of their module: they
    stop the module's shared server and check what all of its traffic left behind.
    """
    reordered: list[pytest.Item] = []
    for _, group in itertools.groupby(items, key=lambda item: item.nodeid.split("::")[0]):
        tests = list(group)
        first: dict[object, int] = {}
        keys: dict[str, tuple[bool, int, int]] = {}
        for position, item in enumerate(tests):
            last = item.get_closest_marker("last_in_module") is not None
            cell = _server_cell(item)
            if cell is None:
                keys[item.nodeid] = (last, position, 0)
            else:
                kind, declared = cell
                keys[item.nodeid] = (last, first.setdefault(kind, position), declared)
        reordered += sorted(tests, key=lambda item: keys[item.nodeid])
    items[:] = reordered


def _server_cell(item: pytest.Item) -> tuple[object, int] | None:
    """``(kind, declared position)`` of a test of the server pool (``servers.get(kind)``)."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or "kind" not in callspec.params:
        return None
    if "servers" not in getattr(item, "fixturenames", ()):
        return None
    return callspec.params["kind"], callspec.indices["kind"]


@pytest.fixture
def deliveries() -> Iterator[Deliveries]:
    """Every delivery the ``response_delivered`` signal reports during the test."""
    with recording() as seen:
        yield seen


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """A fresh Prometheus registry the plugin records into for this test."""
    slots.registry = CollectorRegistry()
    with override_settings(SENT_OTEL_METRICS_REGISTRY="tests.slots.registry"):
        yield slots.registry


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider with an in-memory exporter, used by the plugin for this test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    slots.tracer_provider = provider
    with override_settings(SENT_OTEL_TRACER_PROVIDER="tests.slots.tracer_provider"):
        yield exporter
    provider.shutdown()


@pytest.fixture(scope="session")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(sdist, wheel)`` of this checkout: ``make dist``'s, or built once for the session."""
    return built_distributions(tmp_path_factory.mktemp("dist"))
