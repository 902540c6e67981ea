"""Reference floors for the in-process table: the least any delivery plugin could cost.

``MetricsFloorMiddleware`` hooks ``close()`` on the response instance (the only way to see the
end of a WSGI delivery without breaking sendfile) and records four pre-bound prometheus_client
children there, with no other logic; ``AggregateFloorMiddleware`` keeps the same numbers in plain
lists under one lock (``bisect`` into bucket counts), the shape of the plugin's metrics sink.
``StreamFloorMiddleware`` passes a streaming body through one generator layer, and
:class:`SendFloorASGI` every ASGI message through one ``async def send`` wrapper: the least any
plugin that sees each chunk adds; :class:`CountFloorASGI` hands every message to the
server through a plain function that counts the body bytes of the messages with more to come
and returns the server's awaitable: the least an exact byte count adds per chunk, whatever
else a plugin does. ``SpanFloorMiddleware`` creates and ends one SDK span with
the five contract attributes per request, with no other logic. The plugin's rows read against
these: what is left above a floor is the plugin's own logic.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterator
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


class AggregateFloorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.bounds = (*DEFAULT_BUCKETS, float("inf"))
        self.lock = threading.Lock()
        # count, bytes, duration sum, send sum, duration buckets, send buckets
        self.row: list[Any] = [0, 0, 0.0, 0.0, [0] * len(self.bounds), [0] * len(self.bounds)]

    def _record(self, started: float) -> None:
        elapsed = perf_counter() - started
        row = self.row
        i = bisect_left(self.bounds, elapsed)
        with self.lock:
            row[0] += 1
            row[1] += 14
            row[2] += elapsed
            row[4][i] += 1
            row[3] += elapsed
            row[5][i] += 1

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = perf_counter()
        response = self.get_response(request)
        response.close = _CloseHook(response, started, self._record)  # type: ignore[method-assign]
        return response


def _passthrough(content: Iterator[bytes]) -> Iterator[bytes]:
    yield from content


async def _apassthrough(content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in content:
        yield chunk


class StreamFloorMiddleware:
    """A streaming body through one generator layer, nothing else (WSGI)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response: Any = self.get_response(request)
        if response.streaming:
            content = response.streaming_content
            if response.is_async:
                response.streaming_content = _apassthrough(content)
            else:
                response.streaming_content = _passthrough(content)
        return response


class SendFloorASGI:
    """Every message of an ASGI application through one ``async def send`` wrapper."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def passed(message: Any) -> None:
            await send(message)

        await self.app(scope, receive, passed)


class CountFloorASGI:
    """Every message of an ASGI application through one plain function that returns the
    server's awaitable and counts the bytes of the body messages with more to come."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        sent = 0

        def counted(message: Any) -> Any:
            nonlocal sent
            if message.get("more_body"):
                sent += len(message["body"])
            return send(message)

        await self.app(scope, receive, counted)


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
                "django_sent_otel.delivery.outcome": DELIVERED,
            },
        ).end()
        return response
