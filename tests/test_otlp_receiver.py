"""The OTLP/HTTP test receiver, proven with the real SDK exporter over loopback."""

from __future__ import annotations

import gzip
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.harness.otlp import OTLPReceiver, ReceivedSpan


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as otlp:
        yield otlp


def provider_for(receiver: OTLPReceiver, compression: Compression) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "receiver-test"}))
    exporter = OTLPSpanExporter(
        endpoint=receiver.traces_endpoint, compression=compression, timeout=5
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_exporter_round_trip(receiver: OTLPReceiver, compression: Compression) -> None:
    provider = provider_for(receiver, compression)
    tracer = provider.get_tracer("receiver-test-scope")
    try:
        with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
            child = tracer.start_span(
                "child",
                attributes={
                    "text": "value",
                    "number": 7,
                    "ratio": 0.5,
                    "flag": True,
                    "list": ["a", "b"],
                },
            )
            child.set_status(Status(StatusCode.ERROR, "broken"))
            child.end()
    finally:
        provider.shutdown()

    spans = receiver.wait_for(count=2, timeout=10)
    by_name = {span.name: span for span in spans}
    p, c = by_name["parent"], by_name["child"]
    context = parent.get_span_context()
    assert p.trace_id == format(context.trace_id, "032x")
    assert p.span_id == format(context.span_id, "016x")
    assert p.parent_span_id == ""
    assert p.kind == "SERVER"
    assert p.status_code == "UNSET"
    assert c.trace_id == p.trace_id
    assert c.parent_span_id == p.span_id
    assert c.kind == "INTERNAL"
    assert c.attributes == {
        "text": "value",
        "number": 7,
        "ratio": 0.5,
        "flag": True,
        "list": ["a", "b"],
    }
    assert (c.status_code, c.status_message) == ("ERROR", "broken")
    assert 0 < c.start_time_unix_nano <= c.end_time_unix_nano
    assert c.resource["service.name"] == "receiver-test"
    assert c.scope == "receiver-test-scope"
    assert receiver.requests() >= 1
    assert receiver.errors == []


def test_wait_for_filters_and_counts(receiver: OTLPReceiver) -> None:
    provider = provider_for(receiver, Compression.NoCompression)
    tracer = provider.get_tracer("t")
    try:
        for i in range(3):
            tracer.start_span(f"s{i % 2}").end()
    finally:
        provider.shutdown()
    matching = receiver.wait_for(lambda s: s.name == "s0", count=2)
    assert [s.name for s in matching] == ["s0", "s0"]
    assert len(receiver.spans()) == 3
    receiver.clear()
    assert receiver.spans() == []


def test_wait_for_times_out_listing_what_arrived(receiver: OTLPReceiver) -> None:
    provider = provider_for(receiver, Compression.NoCompression)
    try:
        provider.get_tracer("t").start_span("only-this").end()
    finally:
        provider.shutdown()
    receiver.wait_for(lambda s: s.name == "only-this")
    with pytest.raises(AssertionError, match="only-this"):
        receiver.wait_for(lambda s: s.name == "never", timeout=0.2)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_raw_requests(receiver: OTLPReceiver) -> None:
    empty = trace_service_pb2.ExportTraceServiceRequest().SerializeToString()
    status, body = post(
        receiver.traces_endpoint,
        gzip.compress(empty),
        {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert status == 200
    trace_service_pb2.ExportTraceServiceResponse().ParseFromString(body)
    for path in ("/v1/metrics", "/v1/logs"):
        assert post(receiver.endpoint + path, b"", {})[0] == 200
        assert receiver.requests(path) == 1
    assert post(receiver.traces_endpoint, b"\xff\xff garbage", {})[0] == 400
    assert post(receiver.metrics_endpoint, b"\xff\xff garbage", {})[0] == 400
    assert post(receiver.endpoint + "/elsewhere", b"", {})[0] == 404
    assert len(receiver.errors) == 3
    assert receiver.spans() == []


def test_received_span_helpers() -> None:
    span = ReceivedSpan(
        name="n",
        trace_id="0" * 32,
        span_id="1" * 16,
        parent_span_id="",
        kind="INTERNAL",
        attributes={},
        status_code="UNSET",
        status_message="",
        start_time_unix_nano=1_000_000_000,
        end_time_unix_nano=1_500_000_000,
    )
    assert span.duration_s == 0.5
    assert "parent=-" in span.short()


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_metric_exporter_round_trip(receiver: OTLPReceiver, compression: Compression) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter = OTLPMetricExporter(
        endpoint=receiver.metrics_endpoint, compression=compression, timeout=5
    )
    # A reader that exports only when flushed: the test decides when data is sent.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "receiver-test"})
    )
    meter = provider.get_meter("receiver-test-scope", schema_url="https://example.test/1")
    try:
        meter.create_counter("things", unit="{thing}").add(3, {"kind": "a"})
        histogram = meter.create_histogram(
            "took", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0]
        )
        histogram.record(0.05, {"kind": "a"})
        histogram.record(0.5, {"kind": "a"})
        provider.force_flush()
    finally:
        provider.shutdown()
    receiver.wait_until(lambda r: bool(r.points("took")), what="the histogram point")
    (things,) = receiver.latest("things").values()
    assert (things.kind, things.unit, things.value, things.attributes) == (
        "sum",
        "{thing}",
        3.0,
        {"kind": "a"},
    )
    assert (things.monotonic, things.temporality) == (True, "CUMULATIVE")
    assert (things.scope, things.schema_url) == ("receiver-test-scope", "https://example.test/1")
    assert things.resource["service.name"] == "receiver-test"
    (took,) = receiver.latest("took").values()
    assert (took.kind, took.value, took.bounds, took.bucket_counts) == (
        "histogram",
        2.0,
        (0.1, 1.0),
        (1, 1, 0),
    )
    assert took.sum == pytest.approx(0.55)
    assert receiver.errors == []
    with pytest.raises(AssertionError, match="never"):
        receiver.wait_until(lambda r: False, what="never", timeout=0.2)
