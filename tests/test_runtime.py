"""The runtime's sinks and their order: tracing publishes the span the metrics sink reads."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.test import override_settings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from django_sent_otel import on_delivered
from django_sent_otel.delivery import TRACKER_ATTR, Sink, Tracker
from django_sent_otel.metrics import MetricsSink
from django_sent_otel.pipeline import runtime
from django_sent_otel.signals import SIGNAL_SINK, SignalSink, response_delivered
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


def _receiver(**kwargs: Any) -> None:
    pass


def test_sinks_are_built_in_their_fixed_order() -> None:
    response_delivered.connect(_receiver)
    try:
        assert [type(s) for s in runtime().sinks] == [TracingSink, MetricsSink, SignalSink]
        with override_settings(SENT_OTEL_TRACING_ENABLED=False):
            assert [type(s) for s in runtime().sinks] == [MetricsSink, SignalSink]
        with override_settings(SENT_OTEL_METRICS_ENABLED=False):
            assert [type(s) for s in runtime().sinks] == [TracingSink, SignalSink]
    finally:
        response_delivered.disconnect(_receiver)


def test_the_signal_sink_runs_only_while_someone_listens() -> None:
    """An unheard signal costs nothing: connecting a receiver rebuilds the runtime with the
    signal sink, disconnecting the last one without it; a request with an on_delivered()
    callback gets the sink on its own."""
    assert [type(s) for s in runtime().sinks] == [TracingSink, MetricsSink]
    response_delivered.connect(_receiver)
    try:
        assert runtime().sinks[-1] is SIGNAL_SINK
    finally:
        response_delivered.disconnect(_receiver)
    assert SIGNAL_SINK not in runtime().sinks

    seen: list[str] = []
    request = HttpRequest()
    tracker = Tracker("GET", runtime().sinks)
    setattr(request, TRACKER_ATTR, tracker)
    assert on_delivered(request, lambda d: seen.append(d.outcome))
    assert on_delivered(request, lambda d: seen.append("second"))
    assert tracker.sinks[-1] is SIGNAL_SINK and tracker.sinks.count(SIGNAL_SINK) == 1
    assert SIGNAL_SINK not in runtime().sinks  # only this request's
    tracker.finish()
    assert seen == ["delivered", "second"]


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
    tracing, metrics = runtime().sinks
    _deliver((metrics, tracing), "reversed/")
    assert len(spans.get_finished_spans()) == 1
    assert _exemplar_trace_ids(registry, "reversed/") == set()
