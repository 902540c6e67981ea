"""The runtime's sinks and their order: tracing publishes the span the metrics sink reads."""

from __future__ import annotations

from django.test import override_settings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from django_sent_otel.delivery import Sink, Tracker
from django_sent_otel.metrics import MetricsSink
from django_sent_otel.pipeline import runtime
from django_sent_otel.signals import SignalSink
from django_sent_otel.tracing import TracingSink


def _exemplar_trace_ids(registry: CollectorRegistry, route: str) -> set[str]:
    return {
        sample.exemplar.labels["trace_id"]
        for family in registry.collect()
        for sample in family.samples
        if sample.labels.get("route") == route and sample.exemplar is not None
    }


def _deliver(sinks: tuple[Sink, ...], route: str) -> None:
    tracker = Tracker("GET", sinks)
    tracker.handler_returned(route=route, status_code=200)
    tracker.finish()


def test_sinks_are_built_in_their_fixed_order() -> None:
    assert [type(s) for s in runtime().sinks] == [TracingSink, MetricsSink, SignalSink]
    with override_settings(SENT_OTEL_TRACING_ENABLED=False):
        assert [type(s) for s in runtime().sinks] == [MetricsSink, SignalSink]
    with override_settings(SENT_OTEL_METRICS_ENABLED=False):
        assert [type(s) for s in runtime().sinks] == [TracingSink, SignalSink]


def test_exemplars_carry_the_span_the_tracing_sink_published(
    registry: CollectorRegistry, spans: InMemorySpanExporter
) -> None:
    _deliver(runtime().sinks, "order/")
    (span,) = spans.get_finished_spans()
    assert span.context is not None
    assert _exemplar_trace_ids(registry, "order/") == {format(span.context.trace_id, "032x")}


def test_metrics_before_tracing_would_lose_the_exemplars(
    registry: CollectorRegistry, spans: InMemorySpanExporter
) -> None:
    # Why the order is fixed: the metrics sink reads tracker.span, which tracing sets.
    tracing, metrics, signal = runtime().sinks
    _deliver((metrics, tracing, signal), "reversed/")
    assert len(spans.get_finished_spans()) == 1
    assert _exemplar_trace_ids(registry, "reversed/") == set()
