from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from django_sent_otel.delivery import Delivery
from django_sent_otel.signals import response_delivered
from tests import slots

REQUIRE_TOOLS = os.environ.get("CI", "").lower() == "true"


def need_binary(path: str | None, name: str) -> None:
    """Skip when an external program is missing, but fail under CI=true."""
    if path:
        return
    if REQUIRE_TOOLS:
        pytest.fail(f"{name} is required under CI=true but was not found")
    pytest.skip(f"{name} is not installed")


@pytest.fixture
def deliveries() -> Iterator[list[Delivery]]:
    """Every delivery the ``response_delivered`` signal reports during the test."""
    seen: list[Delivery] = []

    def receiver(sender: Any, delivery: Delivery, **kwargs: Any) -> None:
        seen.append(delivery)

    response_delivered.connect(receiver, weak=False)
    yield seen
    response_delivered.disconnect(receiver)


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


def sample(registry: CollectorRegistry, name: str, **labels: Any) -> float:
    value = registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})
    return 0.0 if value is None else value
