"""OpenTelemetry metrics (opt-in): the delivery facts through the OTel metrics API, read back
from a real SDK MeterProvider (an in-memory reader, and the SDK's Prometheus exporter)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.test import Client, override_settings
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from prometheus_client import CollectorRegistry

from django_sent_otel import otel_metrics
from django_sent_otel.instrumentation import DeliveryInstrumentor
from django_sent_otel.otel_metrics import HTTP_DURATION_BUCKETS, OtelMetricsSink
from django_sent_otel.pipeline import runtime
from django_sent_otel.tracing import SCHEMA_URL

pytestmark = pytest.mark.usefixtures("registry")

NAMES = {
    otel_metrics.DELIVERED_RESPONSES: ("{response}", "Sum"),
    otel_metrics.UNDELIVERED_RESPONSES: ("{response}", "Sum"),
    otel_metrics.DELIVERY_DURATION: ("s", "Histogram"),
    otel_metrics.SEND_DURATION: ("s", "Histogram"),
    otel_metrics.BODY_SENT: ("By", "Sum"),
    otel_metrics.BODY_CHUNKS: ("{chunk}", "Sum"),
    otel_metrics.FIRST_BYTE_DURATION: ("s", "Histogram"),
    otel_metrics.UNDELIVERED_DURATION: ("s", "Histogram"),
}
OUTCOME = "django_sent_otel.delivery.outcome"


@contextmanager
def instrumented(reader: MetricReader) -> Iterator[MeterProvider]:
    """The plugin's OTel metrics on, recording into a provider given to the instrumentor."""
    provider = MeterProvider(metric_readers=[reader])
    instrumentor = DeliveryInstrumentor()
    instrumentor.instrument(meter_provider=provider, skip_dep_check=True)
    try:
        with override_settings(SENT_OTEL_OTEL_METRICS_ENABLED=True):
            yield provider
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    memory = InMemoryMetricReader()
    with instrumented(memory):
        yield memory


def points(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Every metric the plugin's meter produced, by name (scope checked on the way)."""
    data = reader.get_metrics_data()
    found: dict[str, Any] = {}
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != "django_sent_otel":
                continue
            assert scope_metrics.scope.schema_url == SCHEMA_URL
            for metric in scope_metrics.metrics:
                found[metric.name] = metric
    return found


def by_attributes(metric: Any) -> dict[frozenset[tuple[str, Any]], Any]:
    return {frozenset(p.attributes.items()): p for p in metric.data.data_points}


def test_off_by_default() -> None:
    assert not any(isinstance(s, OtelMetricsSink) for s in runtime().sinks)


def test_delivered_and_failed_responses(reader: InMemoryMetricReader) -> None:
    assert any(isinstance(s, OtelMetricsSink) for s in runtime().sinks)
    body = Client().get("/articles/2020/").content
    response = Client().get("/stream/")
    first = next(iter(response.streaming_content))
    response.close()  # the server stopped iterating: the client went away
    Client().generic("PROPFIND", "/no-such-page/")

    found = points(reader)
    assert {name: (m.unit, type(m.data).__name__) for name, m in found.items()} == NAMES

    delivered = {
        "http.request.method": "GET",
        "http.route": "articles/<int:year>/",
        "http.response.status_code": 200,
        OUTCOME: "delivered",
    }
    failed = {
        "http.request.method": "GET",
        "http.route": "stream/",
        "http.response.status_code": 200,
        "error.type": "client_disconnect",
        OUTCOME: "client_disconnect",
    }
    # Unknown values are left out: no route for an unmatched URL; "_OTHER" for the method.
    unmatched = {"http.request.method": "_OTHER", "http.response.status_code": 404}
    unmatched[OUTCOME] = "delivered"
    key = frozenset

    counts = by_attributes(found[otel_metrics.DELIVERED_RESPONSES])
    assert {k: p.value for k, p in counts.items()} == {
        key(delivered.items()): 1,
        key(unmatched.items()): 1,
    }
    failures = by_attributes(found[otel_metrics.UNDELIVERED_RESPONSES])
    assert {k: p.value for k, p in failures.items()} == {key(failed.items()): 1}

    durations = by_attributes(found[otel_metrics.DELIVERY_DURATION])
    assert {k: p.count for k, p in durations.items()} == {
        key(delivered.items()): 1,
        key(failed.items()): 1,
        key(unmatched.items()): 1,
    }
    for point in durations.values():
        assert tuple(point.explicit_bounds) == HTTP_DURATION_BUCKETS
    sends = by_attributes(found[otel_metrics.SEND_DURATION])
    assert sum(p.count for p in sends.values()) == 3

    sent = by_attributes(found[otel_metrics.BODY_SENT])
    assert sent[key(delivered.items())].value == len(body)
    assert sent[key(failed.items())].value == len(first)
    chunks = by_attributes(found[otel_metrics.BODY_CHUNKS])
    assert {k: p.value for k, p in chunks.items()} == {
        key(delivered.items()): 1,
        key(failed.items()): 1,  # the one chunk handed over before the client left
        key(unmatched.items()): 1,
    }
    # Every response got as far as its first byte; only the failed one stayed short.
    first_bytes = by_attributes(found[otel_metrics.FIRST_BYTE_DURATION])
    assert {k: p.count for k, p in first_bytes.items()} == {k: 1 for k in durations}
    gone = by_attributes(found[otel_metrics.UNDELIVERED_DURATION])
    assert {k: p.count for k, p in gone.items()} == {key(failed.items()): 1}
    assert gone[key(failed.items())].sum == durations[key(failed.items())].sum


def test_no_send_phase_when_no_response_was_made(reader: InMemoryMetricReader) -> None:
    """The client left while the view ran: a delivery duration, no send phase."""
    from django_sent_otel.delivery import Tracker

    rt = runtime()
    Tracker("GET", rt.sinks).finish("client_disconnect")
    found = points(reader)
    (failure,) = found[otel_metrics.UNDELIVERED_RESPONSES].data.data_points
    assert dict(failure.attributes) == {
        "http.request.method": "GET",
        "error.type": "client_disconnect",
        OUTCOME: "client_disconnect",
    }
    assert sum(p.count for p in found[otel_metrics.DELIVERY_DURATION].data.data_points) == 1
    assert otel_metrics.SEND_DURATION not in found


def test_instruments_are_made_once_per_provider(reader: InMemoryMetricReader) -> None:
    first = runtime()
    with override_settings(SENT_OTEL_METRICS_EXEMPLARS=False):  # a rebuild of the runtime
        again = runtime()
        assert again is not first
        ours = [s for s in again.sinks if isinstance(s, OtelMetricsSink)]
        theirs = [s for s in first.sinks if isinstance(s, OtelMetricsSink)]
        assert ours[0].metrics is theirs[0].metrics


def test_prometheus_exporter_beside_the_plugin_metrics(registry: CollectorRegistry) -> None:
    """The SDK's Prometheus exporter on the plugin's registry: other names, same counts."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    with instrumented(PrometheusMetricReader(registry=registry)):
        Client().get("/small/")
        families = {f.name: f for f in registry.collect()}
        samples = {
            (
                s.name,
                frozenset((k, v) for k, v in s.labels.items() if k[:11] != "otel_scope_"),
            ): s.value
            for f in families.values()
            for s in f.samples
        }
    ours = {n for n in families if n.startswith("django_http_")}
    otel = {n for n in families if n.startswith("django_sent_otel_")}
    assert ours and otel and not ours & otel
    assert otel == {
        "django_sent_otel_delivered_responses",
        "django_sent_otel_delivery_duration_seconds",
        "django_sent_otel_send_duration_seconds",
        "django_sent_otel_body_sent_bytes",
        "django_sent_otel_body_chunks",
        "django_sent_otel_first_byte_duration_seconds",
    }
    labels = {"method": "GET", "route": "small/", "status": "200"}
    assert samples["django_http_responses_delivered_total", frozenset(labels.items())] == 1
    otel_labels = {
        "http_request_method": "GET",
        "http_route": "small/",
        "http_response_status_code": "200",
        "django_sent_otel_delivery_outcome": "delivered",
    }
    otel_name = "django_sent_otel_delivered_responses_total"
    assert samples[otel_name, frozenset(otel_labels.items())] == 1, samples
