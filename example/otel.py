"""OpenTelemetry SDK setup of the example, done once per process (each gunicorn worker).

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (e.g. ``http://127.0.0.1:4318`` for the Jaeger of
  ``grafana/docker-compose.yml``): spans go there through a ``BatchSpanProcessor``.
- ``EXAMPLE_SPANS_FILE`` set (the demo sets it): spans are also appended to that file as JSON
  lines, so the demo can show a trace without any collector.
- Neither: spans are still created and sampled (trace ids for logs and exemplars), and dropped.

``DjangoInstrumentor().instrument()`` must run before Django loads its middleware, so
``wsgi.py``/``asgi.py`` call :func:`configure` before building the application.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger("example.otel")

SPANS_FILE_ENV = "EXAMPLE_SPANS_FILE"
SERVICE_NAME = "django-sent-otel-example"

_provider: Any = None


def configure() -> None:
    """Install the SDK tracer provider and the Django instrumentation (idempotent)."""
    global _provider
    if _provider is not None:
        return
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.django import DjangoInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        logger.warning("OpenTelemetry SDK not installed (pip install 'django-sent-otel[otel]')")
        return
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME}
    )
    provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    spans_file = os.environ.get(SPANS_FILE_ENV)
    if spans_file:
        out = open(spans_file, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
        exporter = ConsoleSpanExporter(
            out=out, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    _provider = provider


def shutdown() -> None:
    """Flush and stop the span processors (gunicorn's ``worker_exit`` hook calls it)."""
    if _provider is not None:
        _provider.shutdown()
