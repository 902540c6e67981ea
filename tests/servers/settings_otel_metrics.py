"""Settings of the OpenTelemetry metrics server test: an SDK MeterProvider exporting OTLP/HTTP.

A global ``MeterProvider`` with a ``PeriodicExportingMetricReader(OTLPMetricExporter())``, as a
project would configure it; the exporter reads its endpoint (``OTEL_EXPORTER_OTLP_*``) and the
reader its interval (``OTEL_METRIC_EXPORT_INTERVAL``) from the environment. The plugin's OTel
metrics are on, its Prometheus metrics too (the default), so both can be compared.
"""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.settings import *  # noqa: F403

metrics.set_meter_provider(
    MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
        resource=Resource.create(),  # reads OTEL_SERVICE_NAME
    )
)

SENT_OTEL_OTEL_METRICS_ENABLED = True
