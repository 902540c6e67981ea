"""The ``response-delivered`` span, through the OpenTelemetry API only.

Without an SDK the global tracer provider is the API's proxy and nothing is done; with one, the
span is made in a single call at the end of delivery, started at the moment the handler
returned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from time import time_ns
from typing import Any, Final

from opentelemetry import propagate, trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._compat import UNKNOWN, current_context, span_in, tracer_provider_set
from ._names import (
    CHUNKS_ATTRIBUTE,
    DISCONNECTED_AT_ATTRIBUTE,
    OUTCOME_ATTRIBUTE,
    SCHEMA_URL,
    TIME_TO_FIRST_BYTE_ATTRIBUTE,
    http_attributes,
)
from ._version import __version__
from .delivery import DELIVERED, Tracker

SPAN_NAME = "response-delivered"
#: Read once: an Enum member lookup costs about 900 instructions on Python 3.11.
_INTERNAL: Final = SpanKind.INTERNAL


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
    return trace.get_tracer(
        "django_sent_otel", __version__, tracer_provider=provider, schema_url=SCHEMA_URL
    )


def _no_sdk(provider: object) -> bool:
    return isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _global_provider_is_real(env_names_one: bool) -> bool:
    """Whether the global tracer provider is an SDK's (not the API's proxy or no-op).

    Fast path: when no provider was set in code and ``OTEL_PYTHON_TRACER_PROVIDER`` named
    none at start-up, there is no SDK and the public ``get_tracer_provider()`` (an
    environment lookup) is not needed.
    """
    provider = tracer_provider_set()
    if provider is None and not env_names_one:
        return False
    if provider is None or provider is UNKNOWN:
        provider = trace.get_tracer_provider()
    return not _no_sdk(provider)


class TracingSink:
    """Records one ``response-delivered`` span per response.

    The parent context and start time are taken when the handler returns; the span is made in
    one call when delivery ends, with every attribute, its start time set to that moment. With
    the global provider and no SDK installed yet (the API's proxy or no-op provider), nothing
    is done at all; the first request after an SDK provider is set makes real spans.
    """

    __slots__ = ("attributes", "env_provider", "header_keys", "live", "textmap", "tracer")
    on_return = True  # the parent context is the one current when the handler returns

    def __init__(self, tracer: trace.Tracer, *, live: bool = True) -> None:
        self.tracer = tracer
        #: False while the tracer may be the API's no-op: checked per request until it is not.
        self.live = live
        self.env_provider = OTEL_PYTHON_TRACER_PROVIDER in os.environ
        self.attributes: dict[tuple[str, str, int, str | None], dict[str, Any]] = {}
        #: The global propagator, and the ``request.META`` keys of its fields.
        self.textmap: object = None
        self.header_keys: tuple[str, ...] = ()

    def _active(self) -> bool:
        """Whether the global provider is an SDK's now; the first time it is, the tracer is
        taken again from it: the one taken before was the API's proxy, one call deeper."""
        if not _global_provider_is_real(self.env_provider):
            return False
        self.tracer = get_tracer(None)
        self.live = True
        return True

    def handler_returned(self, tracker: Tracker) -> None:
        """Keep the parent context: the current one if it holds a valid span (the Django
        server span is current only until the handler returns), else one extracted from the
        request headers when they carry a propagation field, else the current one all the
        same (the span is then a root). The start time is taken from the tracker at the end.

        The context is always given to the SDK, never None: that spares it reading the
        current context twice, and the span's parent is what it was at this moment.
        """
        if not (self.live or self._active()):
            return
        context = current_context()
        if context:  # the empty context (nothing attached, the common case) holds no span
            span = span_in(context)
            if span is not None and span.get_span_context().is_valid:
                tracker.trace_start = context
                return
        textmap = propagate.get_global_textmap()
        if textmap is not self.textmap:  # the first request, or a new global propagator
            self.header_keys = tuple(_meta_key(field) for field in sorted(textmap.fields))
            self.textmap = textmap
        try:
            meta = tracker.request.META
        except AttributeError:  # no Django request (the ASGI wrapper's tracker, early)
            meta = None
        if meta:
            # A loop of ``in`` tests: cheaper than any() (a generator) or a set operation.
            for key in self.header_keys:
                if key in meta:
                    context = propagate.extract(meta, getter=_meta_getter)
                    break
        tracker.trace_start = context

    def finished(self, tracker: Tracker) -> None:
        parent = tracker.trace_start
        if parent is None:
            if tracker.returned_at is not None:
                return  # no SDK when the handler returned
            # The outcome came before any response (the client left while the view ran):
            # the span covers the request from its start, its parent found now.
            self.handler_returned(tracker)
            parent = tracker.trace_start
            if parent is None:
                return  # no SDK
            started = time_ns() - int(tracker.duration * 1e9)
        else:
            # The moment the handler returned, on the wall clock.
            started = time_ns() - int(tracker.send_duration * 1e9)
        reason = tracker.reason
        # A fresh copy of the attributes every span of this label set has (the label sets are
        # bounded as the metrics' are), so only the body size is added per request.
        try:
            key = (tracker.method, tracker.route, tracker.status_code, reason)
            attributes = self.attributes[key].copy()
        except KeyError:
            attributes = self._attributes(tracker, reason)
        attributes["http.response.body.size"] = tracker.bytes_sent
        attributes[CHUNKS_ATTRIBUTE] = tracker.chunks
        first = tracker.time_to_first_byte
        if first is not None:
            attributes[TIME_TO_FIRST_BYTE_ATTRIBUTE] = first
        left = tracker.disconnected_at
        if left is not None:  # seconds from request start until the client was seen leaving
            attributes[DISCONNECTED_AT_ATTRIBUTE] = max(left - tracker.started_at, 0.0)
        # Positional: start_span(name, context, kind, attributes, links, start_time).
        span = self.tracer.start_span(SPAN_NAME, parent, _INTERNAL, attributes, None, started)
        if reason is not None and span.is_recording():
            span.set_status(Status(StatusCode.ERROR, _DESCRIPTIONS[reason]))
        span.end()
        tracker.span = span

    def _attributes(self, tracker: Tracker, reason: str | None) -> dict[str, Any]:
        """The attributes of a new label set, kept for its later spans; a copy is returned."""
        key = (tracker.method, tracker.route, tracker.status_code, reason)
        attributes = http_attributes(tracker)
        attributes[OUTCOME_ATTRIBUTE] = reason or DELIVERED
        self.attributes[key] = attributes
        return attributes.copy()


_DESCRIPTIONS = {
    "client_disconnect": "the client went away before the whole body was handed over",
    "stream_error": "the response body raised after the headers were sent",
}


def resolve_provider(obj: Any) -> Any:
    """A tracer provider from what the setting names: an instance, a class or a factory."""
    if isinstance(obj, type) or not hasattr(obj, "get_tracer"):
        obj = obj()
    if not callable(getattr(obj, "get_tracer", None)):
        raise TypeError(f"{obj!r} is not a tracer provider")
    return obj
