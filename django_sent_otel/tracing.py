"""The ``response-delivered`` span, through the OpenTelemetry API only.

Without an SDK the global tracer is a no-op and the span costs next to nothing; attributes
beyond the few given at start are only computed while the span is recording.
"""

from __future__ import annotations

from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import __version__
from .delivery import Delivery, Tracker

SPAN_NAME = "response-delivered"


def _meta_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class _MetaGetter(Getter[Mapping[str, Any]]):
    """Reads propagation headers from a WSGI-style ``request.META``."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(_meta_key(key))
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


_meta_getter = _MetaGetter()


def get_tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    return trace.get_tracer("django_sent_otel", __version__, tracer_provider=provider)


def _parent_context(tracker: Tracker) -> otel_context.Context | None:
    """The current context if it holds a valid span, else one extracted from the headers."""
    current = otel_context.get_current()
    if trace.get_current_span(current).get_span_context().is_valid:
        return current
    meta = getattr(tracker.request, "META", None)
    if meta and any(key in meta for key in _propagation_keys()):
        return propagate.extract(meta, getter=_meta_getter)
    return None


_keys_cache: tuple[object, tuple[str, ...]] = (None, ())


def _propagation_keys() -> tuple[str, ...]:
    """``request.META`` keys of the global propagator's fields, cached per propagator."""
    global _keys_cache
    textmap = propagate.get_global_textmap()
    cached, keys = _keys_cache
    if cached is not textmap:
        keys = tuple(_meta_key(field) for field in textmap.fields)
        _keys_cache = (textmap, keys)
    return keys


class TracingSink:
    """Starts the span when the handler returned and ends it when delivery ends."""

    __slots__ = ("tracer",)

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def _start(self, tracker: Tracker, start_time: int | None) -> Any:
        return self.tracer.start_span(
            SPAN_NAME,
            context=_parent_context(tracker),
            kind=SpanKind.INTERNAL,
            attributes={
                "http.request.method": tracker.method,
                "http.route": tracker.route,
                "http.response.status_code": tracker.status_code,
            },
            start_time=start_time,
        )

    def handler_returned(self, tracker: Tracker) -> None:
        tracker.span = self._start(tracker, None)

    def finished(self, tracker: Tracker, delivery: Delivery) -> None:
        span = tracker.span
        if span is None:
            # The outcome came before any response (the client left while the view ran):
            # the span covers the request from its start.
            start = time_ns() - int(delivery.duration * 1e9)
            span = tracker.span = self._start(tracker, start)
        if span.is_recording():
            attributes: dict[str, Any] = {
                "http.response.body.size": delivery.bytes_sent,
                "delivery.outcome": delivery.outcome,
            }
            if delivery.reason is not None:
                attributes["error.type"] = delivery.reason
                span.set_status(Status(StatusCode.ERROR, _DESCRIPTIONS[delivery.reason]))
            span.set_attributes(attributes)
        span.end()


_DESCRIPTIONS = {
    "client_disconnect": "the client went away before the whole body was handed over",
    "stream_error": "the response body raised after the headers were sent",
}
