"""OpenTelemetry metrics from a real server to a real OTLP/HTTP receiver, exact counts.

gunicorn (sync, one worker) runs ``tests.servers.settings_otel_metrics``: an SDK MeterProvider
exporting every 200 ms to the test's receiver. Real clients read responses whole, reset the
connection mid-stream and meet a failing body; the receiver's cumulative totals must match the
traffic exactly and stay there (nothing counted twice), and so must the Prometheus series the
plugin serves from the same process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from django_sent_otel import otel_metrics
from django_sent_otel.tracing import SCHEMA_URL
from tests.harness import servers
from tests.harness.clients import abort_after, full_read
from tests.harness.otlp import OTLPReceiver
from tests.harness.scrape import scrape
from tests.views import SMALL_BODY

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]

SETTINGS = "tests.servers.settings_otel_metrics"
SERVICE = "sent-otel-metrics-e2e"
OUTCOME = "django_sent_otel.delivery.outcome"
WAIT = 30.0

SMALL = {"http.request.method": "GET", "http.route": "small/", "http.response.status_code": 200}
ARTICLE = {**SMALL, "http.route": "articles/<int:year>/"}
UNMATCHED = {"http.request.method": "_OTHER", "http.response.status_code": 404}
STREAM = {**SMALL, "http.route": "stream/", "error.type": "client_disconnect"}
ERROR_STREAM = {**SMALL, "http.route": "error-stream/", "error.type": "stream_error"}


def key(attributes: dict[str, Any], outcome: str) -> frozenset[tuple[str, Any]]:
    return frozenset({**attributes, OUTCOME: outcome}.items())


DELIVERED = {
    key(SMALL, "delivered"): 4,
    key(ARTICLE, "delivered"): 2,
    key(UNMATCHED, "delivered"): 1,
}
UNDELIVERED = {key(STREAM, "client_disconnect"): 3, key(ERROR_STREAM, "stream_error"): 2}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as otlp:
        yield otlp


@pytest.fixture(scope="module")
def server(receiver: OTLPReceiver) -> Iterator[servers.Server]:
    env = {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.metrics_endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }
    with servers.Server("gunicorn-sync", env=env) as running:
        yield running


def totals(receiver: OTLPReceiver, metric: str) -> dict[frozenset[tuple[str, Any]], float]:
    return {k: p.value for k, p in receiver.latest(metric).items()}


def test_exact_counts_after_real_traffic_with_aborts(
    receiver: OTLPReceiver, server: servers.Server
) -> None:
    port = server.port
    for _ in range(4):
        assert full_read(port, "/small/").complete
    for _ in range(2):
        assert full_read(port, "/articles/2020/").complete
    assert full_read(port, "/no-such-page/", method="PROPFIND").status == 404
    for _ in range(3):
        assert not abort_after(port, "/stream/", 16 * 1024).complete
    for _ in range(2):
        assert not full_read(port, "/error-stream/", stall=3.0).complete

    def reached(r: OTLPReceiver) -> bool:
        return (
            totals(r, otel_metrics.DELIVERED_RESPONSES) == DELIVERED
            and totals(r, otel_metrics.UNDELIVERED_RESPONSES) == UNDELIVERED
        )

    receiver.wait_until(reached, what="the exact delivered/undelivered totals", timeout=WAIT)
    # Two more exports later the totals are still exact: nothing is counted twice or late.
    seen = receiver.requests("/v1/metrics")
    receiver.wait_until(
        lambda r: r.requests("/v1/metrics") >= seen + 2, what="two more exports", timeout=WAIT
    )
    assert totals(receiver, otel_metrics.DELIVERED_RESPONSES) == DELIVERED
    assert totals(receiver, otel_metrics.UNDELIVERED_RESPONSES) == UNDELIVERED

    every = {**DELIVERED, **UNDELIVERED}
    assert totals(receiver, otel_metrics.DELIVERY_DURATION) == every
    assert totals(receiver, otel_metrics.SEND_DURATION) == every
    body = totals(receiver, otel_metrics.BODY_SENT)
    assert body[key(SMALL, "delivered")] == 4 * len(SMALL_BODY)
    assert body[key(STREAM, "client_disconnect")] >= 3 * 16 * 1024
    # Every response got as far as its first byte; only the failures stayed short.
    assert totals(receiver, otel_metrics.FIRST_BYTE_DURATION) == every
    assert totals(receiver, otel_metrics.UNDELIVERED_DURATION) == UNDELIVERED
    chunks = totals(receiver, otel_metrics.BODY_CHUNKS)
    assert chunks[key(SMALL, "delivered")] == 4  # a body in memory is one chunk
    assert chunks[key(STREAM, "client_disconnect")] >= 3  # at least one per aborted stream

    (point, *_) = receiver.latest(otel_metrics.DELIVERY_DURATION).values()
    assert point.unit == "s" and point.temporality == "CUMULATIVE"
    assert point.bounds == otel_metrics.HTTP_DURATION_BUCKETS
    assert (point.scope, point.schema_url) == ("django_sent_otel", SCHEMA_URL)
    assert point.resource["service.name"] == SERVICE
    units = {p.metric: p.unit for p in receiver.points() if p.scope == "django_sent_otel"}
    assert units == {
        otel_metrics.DELIVERED_RESPONSES: "{response}",
        otel_metrics.UNDELIVERED_RESPONSES: "{response}",
        otel_metrics.DELIVERY_DURATION: "s",
        otel_metrics.SEND_DURATION: "s",
        otel_metrics.BODY_SENT: "By",
        otel_metrics.BODY_CHUNKS: "{chunk}",
        otel_metrics.FIRST_BYTE_DURATION: "s",
        otel_metrics.UNDELIVERED_DURATION: "s",
    }
    assert receiver.errors == []

    # The Prometheus series of the same process count the same responses once each.
    prometheus = scrape(port)
    assert prometheus.total("django_http_responses_delivered_total") == sum(DELIVERED.values())
    failures = "django_http_response_delivery_failures_total"
    assert prometheus.total(failures, reason="client_disconnect") == 3
    assert prometheus.total(failures, reason="stream_error") == 2
    assert prometheus.total("django_http_responses_delivered_total", method="other") == 1
