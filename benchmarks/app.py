"""Builds the benchmark project's WSGI/ASGI application for the configuration in the environment.

OpenTelemetry is set up here, before Django builds its middleware chain: an SDK
``TracerProvider`` with a ``BatchSpanProcessor`` and a :class:`CountingExporter` (no network),
and ``DjangoInstrumentor().instrument()`` for the configurations that use them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from benchmarks import configs

SETTINGS_MODULE = "benchmarks.settings"

_exporter: CountingExporter | None = None


def config() -> configs.Config:
    return configs.get(os.environ.get(configs.ENV_VAR, "bare"))


try:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
except ImportError:  # pragma: no cover - the SDK is part of the [otel] extra
    SpanExporter = object  # type: ignore[assignment,misc]


class CountingExporter(SpanExporter):  # type: ignore[misc]
    """Counts exported spans: the SDK's whole pipeline runs, nothing leaves the process."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[Any]) -> Any:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def setup_otel(cfg: configs.Config) -> None:
    global _exporter
    if cfg.sdk:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        _exporter = CountingExporter()
        provider.add_span_processor(BatchSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    if cfg.sdk_metrics:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    if cfg.otel_django:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument()


def exported_spans() -> int:
    """Spans the counting exporter received so far (after a flush); 0 without the SDK."""
    if _exporter is None:
        return 0
    from opentelemetry import trace

    provider: Any = trace.get_tracer_provider()
    provider.force_flush()
    return _exporter.exported


def wsgi_application() -> Any:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    setup_otel(config())
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def asgi_application() -> Any:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    cfg = config()
    setup_otel(cfg)
    from django.core.asgi import get_asgi_application

    if cfg.plugin:
        from django_sent_otel.asgi import DeliveryASGIMiddleware

        return DeliveryASGIMiddleware(get_asgi_application())
    if cfg.asgi_wrapper:
        from django.utils.module_loading import import_string

        return import_string(cfg.asgi_wrapper)(get_asgi_application())
    return get_asgi_application()
