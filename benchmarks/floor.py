"""Reference floors for the in-process table: the least any delivery plugin could cost.

``MetricsFloorMiddleware`` hooks ``close()`` on the response instance (the only way to see the
end of a WSGI delivery without breaking sendfile) and records four pre-bound prometheus_client
children there, with no other logic. ``SpanFloorMiddleware`` creates and ends one SDK span with
the five contract attributes per request, with no other logic. The plugin's rows read against
these: what is left above a floor is the plugin's own logic.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from django_sent_otel.conf import DEFAULT_BUCKETS
from django_sent_otel.delivery import DELIVERED


# A deliberate baseline of the repetition check: this hook repeats the shape of the
# middleware's close() hook on purpose, since it measures what such a hook costs at the least.
class _CloseHook:
    __slots__ = ("record", "response", "started")

    def __init__(self, response: HttpResponseBase, started: float, record: Any) -> None:
        self.response: HttpResponseBase | None = response
        self.started = started
        self.record = record

    def __call__(self) -> None:
        response = self.response
        if response is None:
            return
        self.response = None
        response.__dict__.pop("close", None)
        try:
            response.close()
        finally:
            self.record(self.started)


class MetricsFloorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.get_response = get_response
        registry = CollectorRegistry()
        labels = ("GET", "/")
        self.delivered = Counter("d", "d", ["m", "r", "s"], registry=registry).labels(
            *labels, "200"
        )
        self.duration = Histogram(
            "t", "t", ["m", "r"], buckets=DEFAULT_BUCKETS, registry=registry
        ).labels(*labels)
        self.send = Histogram(
            "s", "s", ["m", "r"], buckets=DEFAULT_BUCKETS, registry=registry
        ).labels(*labels)
        self.sent = Counter("b", "b", ["m", "r"], registry=registry).labels(*labels)

    def _record(self, started: float) -> None:
        elapsed = perf_counter() - started
        self.delivered.inc()
        self.duration.observe(elapsed)
        self.send.observe(elapsed)
        self.sent.inc(14)

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = perf_counter()
        response = self.get_response(request)
        response.close = _CloseHook(response, started, self._record)  # type: ignore[method-assign]
        return response


class SpanFloorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        from opentelemetry import trace

        self.get_response = get_response
        self.tracer = trace.get_tracer("benchmarks.floor")

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        self.tracer.start_span(
            "floor",
            attributes={
                "http.request.method": "GET",
                "http.route": "/",
                "http.response.status_code": response.status_code,
                "http.response.body.size": 14,
                "delivery.outcome": DELIVERED,
            },
        ).end()
        return response
