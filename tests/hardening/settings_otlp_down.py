"""Settings with the OpenTelemetry SDK exporting to an OTLP endpoint where nobody listens.

``SENT_OTEL_HARDENING_OTLP_ENDPOINT`` (set by the test) is a closed port on 127.0.0.1. The SDK
is set up as a project would: a global ``TracerProvider`` with a ``BatchSpanProcessor`` around
an ``OTLPSpanExporter``; a small queue and a short export timeout make it drop spans quickly.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.settings import *  # noqa: F403

_ENDPOINT = os.environ.get("SENT_OTEL_HARDENING_OTLP_ENDPOINT", "http://127.0.0.1:9/v1/traces")

_provider = TracerProvider()
_provider.add_span_processor(
    BatchSpanProcessor(
        OTLPSpanExporter(endpoint=_ENDPOINT, timeout=1.0),
        max_queue_size=64,
        max_export_batch_size=16,
        schedule_delay_millis=100,
        export_timeout_millis=1000,
    )
)
trace.set_tracer_provider(_provider)
