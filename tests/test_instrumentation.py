"""The opentelemetry-instrument entry point places the middleware right after Django's own."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from django_sent_otel.checks import MIDDLEWARE_PATH, OTEL_MIDDLEWARE
from django_sent_otel.instrumentation import DeliveryInstrumentor
from django_sent_otel.package import _instruments


def test_entry_point_is_registered() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="opentelemetry_instrumentor")}
    assert found["django_sent_otel"] == "django_sent_otel.instrumentation:DeliveryInstrumentor"


def _instrumented(middleware: list[str]) -> list[str]:
    with override_settings(MIDDLEWARE=middleware):
        instrumentor = DeliveryInstrumentor()
        instrumentor._instrument()
        result = list(settings.MIDDLEWARE)
        instrumentor._uninstrument()
        # Uninstrumenting takes out what instrumenting put in, and only that.
        assert list(settings.MIDDLEWARE) == middleware
    return result


def test_inserted_first_without_django_instrumentation() -> None:
    other = "django.middleware.common.CommonMiddleware"
    assert _instrumented([other]) == [MIDDLEWARE_PATH, other]


def test_inserted_after_django_instrumentation() -> None:
    other = "django.middleware.common.CommonMiddleware"
    assert _instrumented([OTEL_MIDDLEWARE, other]) == [OTEL_MIDDLEWARE, MIDDLEWARE_PATH, other]


def test_not_inserted_twice() -> None:
    assert _instrumented([MIDDLEWARE_PATH]) == [MIDDLEWARE_PATH]


def test_django_instrumentation_after_ours_keeps_the_order() -> None:
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    with override_settings(MIDDLEWARE=["django.middleware.common.CommonMiddleware"]):
        ours = DeliveryInstrumentor()
        ours._instrument()
        django_instrumentor = DjangoInstrumentor()
        django_instrumentor._instrument()
        try:
            assert list(settings.MIDDLEWARE)[:2] == [OTEL_MIDDLEWARE, MIDDLEWARE_PATH]
        finally:
            django_instrumentor._uninstrument()
            ours._uninstrument()


def test_dependencies_are_declared_like_contrib_instrumentors() -> None:
    assert _instruments == ("django >= 5.2",)
    assert DeliveryInstrumentor().instrumentation_dependencies() == _instruments
    # BaseInstrumentor checks them: the installed Django satisfies the declaration.
    assert DeliveryInstrumentor()._check_dependency_conflicts() is None


def test_given_tracer_provider_is_used(client_with_provider: Any) -> None:
    exporter, instrumentor = client_with_provider
    Client().get("/small/")
    (span,) = exporter.get_finished_spans()
    assert span.name == "response-delivered"
    instrumentor.uninstrument()
    Client().get("/small/")
    assert len(exporter.get_finished_spans()) == 1  # back to the global (no-op) provider


@pytest.fixture
def client_with_provider() -> Iterator[tuple[InMemorySpanExporter, DeliveryInstrumentor]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = DeliveryInstrumentor()
    instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
    try:
        yield exporter, instrumentor
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        provider.shutdown()
