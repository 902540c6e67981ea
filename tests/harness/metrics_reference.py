"""The previous metrics design, kept as the reference the collector's scrapes must equal.

One prometheus_client ``Counter``/``Histogram``/``Gauge`` child per series, fed the same
:class:`Delivery` values; exemplars at most once per label set and series per ``interval``
seconds, as the plugin has always done. Only the tests use it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from time import monotonic
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from django_sent_otel.conf import DEFAULT_BUCKETS
from django_sent_otel.delivery import Delivery


class ReferenceMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        namespace: str = "django",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        interval: float = 1.0,
    ) -> None:
        common: dict[str, Any] = {"namespace": namespace, "registry": registry}
        self.delivered = Counter(
            "http_responses_delivered",
            "Responses whose whole body was handed to the server (delivered).",
            ["method", "route", "status"],
            **common,
        )
        self.failures = Counter(
            "http_response_delivery_failures",
            "Responses not fully delivered, by reason (client_disconnect, stream_error).",
            ["method", "route", "status", "reason"],
            **common,
        )
        self.duration = Histogram(
            "http_delivery_duration_seconds",
            "Time from request start until the response was delivered.",
            ["method", "route"],
            buckets=buckets,
            **common,
        )
        self.send_duration = Histogram(
            "http_send_duration_seconds",
            "Time from the handler returning the response until it was delivered.",
            ["method", "route"],
            buckets=buckets,
            **common,
        )
        self.sent_bytes = Counter(
            "http_response_sent_bytes",
            "Response body bytes handed to the server, failed deliveries included.",
            ["method", "route"],
            **common,
        )
        self.sending = Gauge(
            "http_responses_sending",
            "Responses between handler return and the end of their delivery.",
            multiprocess_mode="livesum",
            **common,
        )
        self.first_byte = Histogram(
            "http_time_to_first_byte_seconds",
            "Time from request start until the first body byte (bodiless: the headers) was "
            "handed to the server, delivered or not.",
            ["method", "route"],
            buckets=buckets,
            **common,
        )
        self.undelivered = Histogram(
            "http_undelivered_duration_seconds",
            "Time from request start until the failure was known, for responses not fully "
            "delivered.",
            ["method", "route", "reason"],
            buckets=buckets,
            **common,
        )
        self.abandoned = Counter(
            "http_abandoned_work_seconds",
            "Seconds the application kept working on requests after their client was known gone.",
            ["method", "route"],
            **common,
        )
        self.bounds = sorted(float(b) for b in buckets)
        self.interval = interval
        self._children: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._exemplar_at: dict[tuple[Any, ...], float] = {}

    def record(self, delivery: Delivery, span: Any = None) -> None:
        key = (delivery.method, delivery.route, delivery.status_code, delivery.reason)
        children = self._children.get(key)
        if children is None:
            method, route, status = delivery.method, delivery.route, str(delivery.status_code)
            if delivery.reason is None:
                outcome = self.delivered.labels(method, route, status)
            else:
                outcome = self.failures.labels(method, route, status, delivery.reason)
            children = self._children[key] = (
                outcome,
                self.duration.labels(method, route),
                self.send_duration.labels(method, route),
                self.sent_bytes.labels(method, route),
                self.first_byte.labels(method, route),
                None
                if delivery.reason is None
                else self.undelivered.labels(method, route, delivery.reason),
            )
            self.abandoned.labels(method, route)  # every route shows it, from zero
        outcome, duration, send_duration, sent_bytes, first_byte, undelivered = children
        given = self._exemplars(key, delivery, span)
        if delivery.reason is None:
            outcome.inc(1, given[0])
            duration.observe(delivery.duration, given[1])
            send_duration.observe(delivery.send_duration, given[2])
        else:
            outcome.inc()
            undelivered.observe(delivery.duration, given[4])
        if delivery.time_to_first_byte is not None:
            first_byte.observe(delivery.time_to_first_byte, given[3])
        sent_bytes.inc(delivery.bytes_sent)

    def _exemplars(self, key: tuple[Any, ...], delivery: Delivery, span: Any) -> list[Any]:
        if span is None or not span.get_span_context().trace_flags.sampled:
            return [None] * 5
        ctx = span.get_span_context()
        exemplar = {
            "trace_id": format(ctx.trace_id, "032x"),
            "span_id": format(ctx.span_id, "016x"),
        }
        now = monotonic()
        delivered = delivery.reason is None
        first = delivery.time_to_first_byte
        slots = (
            ("counter",) if delivered else None,
            ("duration", bisect_left(self.bounds, delivery.duration)) if delivered else None,
            ("send", bisect_left(self.bounds, delivery.send_duration)) if delivered else None,
            None if first is None else ("first", bisect_left(self.bounds, first)),
            None if delivered else ("gone", bisect_left(self.bounds, delivery.duration)),
        )
        given: list[Any] = []
        for slot in slots:
            if slot is None:
                given.append(None)
                continue
            last = self._exemplar_at.get((key, slot))
            if last is not None and now - last < self.interval:
                given.append(None)
            else:
                self._exemplar_at[(key, slot)] = now
                given.append(exemplar)
        return given
