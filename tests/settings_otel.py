"""Settings for the OpenTelemetry end-to-end tests (tests/test_tracing_e2e.py).

``SENT_OTEL_E2E_MODE`` chooses how tracing is set up in the server process:

- ``sdk``: explicit setup, as a project would write it: an SDK ``TracerProvider`` with a
  ``BatchSpanProcessor(OTLPSpanExporter())`` made global and ``DjangoInstrumentor().instrument()``.
  The exporter reads its endpoint, timeout and the batch delay from the standard ``OTEL_*``
  variables. The instrumentor runs last, once every setting above is defined (it reads and
  extends ``MIDDLEWARE``).
- ``auto``: nothing here; the server runs under ``opentelemetry-instrument``. The
  ``DeliveryMiddleware`` is *removed* from ``MIDDLEWARE`` so that only the package's
  ``opentelemetry_instrumentor`` entry point can put it back.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import MIDDLEWARE as _BASE_MIDDLEWARE

PLUGIN_MIDDLEWARE = "django_sent_otel.middleware.DeliveryMiddleware"
MODE = os.environ.get("SENT_OTEL_E2E_MODE", "sdk")

if MODE == "auto":
    MIDDLEWARE = [m for m in _BASE_MIDDLEWARE if m != PLUGIN_MIDDLEWARE]
elif MODE == "sdk":
    MIDDLEWARE = list(_BASE_MIDDLEWARE)

    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    _provider = TracerProvider(resource=Resource.create())  # reads OTEL_SERVICE_NAME
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    DjangoInstrumentor().instrument()
else:
    raise RuntimeError(f"SENT_OTEL_E2E_MODE must be 'sdk' or 'auto', not {MODE!r}")
