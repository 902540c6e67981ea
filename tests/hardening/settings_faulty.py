"""Settings with every recording path of django-sent-otel broken on purpose.

Imported by the server process (``DJANGO_SETTINGS_MODULE=tests.hardening.settings_faulty``):

- the metrics sink: ``DeliveryMetrics.record`` raises;
- the tracing sink: the tracer provider's span processor raises on span start and end (the
  span is made when delivery ends, so its sink fails there);
- the signal: a ``response_delivered`` receiver raises;
- the callbacks: a middleware registers an ``on_delivered`` callback that raises, on every
  request.

The tests compare what clients receive with a clean server (byte for byte) and check that the
plugin logged these errors while the server reported no application error.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

import django_sent_otel
from django_sent_otel.metrics import DeliveryMetrics
from django_sent_otel.signals import response_delivered
from tests.settings import *  # noqa: F403
from tests.settings import LOGGING as _BASE_LOGGING
from tests.settings import MIDDLEWARE as _BASE_MIDDLEWARE

#: Text in every injected exception, to find them in the server log.
MARK = "hardening-injected-fault"


class InjectedFault(RuntimeError):
    """An exception raised on purpose inside the plugin's recording path."""


def _broken_record(self: DeliveryMetrics, delivery: Any, exemplar: Any = None) -> None:
    raise InjectedFault(f"{MARK}: metrics sink")


DeliveryMetrics.record = _broken_record  # type: ignore[method-assign]


class RaisingSpanProcessor(SpanProcessor):
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        raise InjectedFault(f"{MARK}: span processor on_start")

    def on_end(self, span: ReadableSpan) -> None:
        raise InjectedFault(f"{MARK}: span processor on_end")


FAULTY_TRACER_PROVIDER = TracerProvider()
FAULTY_TRACER_PROVIDER.add_span_processor(RaisingSpanProcessor())
SENT_OTEL_TRACER_PROVIDER = "tests.hardening.settings_faulty.FAULTY_TRACER_PROVIDER"


def raising_receiver(sender: Any, **kwargs: Any) -> None:
    raise InjectedFault(f"{MARK}: signal receiver")


response_delivered.connect(raising_receiver, dispatch_uid="tests.hardening.raising_receiver")


def raising_callback(delivery: Any) -> None:
    raise InjectedFault(f"{MARK}: on_delivered callback")


class RaisingCallbackMiddleware:
    """Registers :func:`raising_callback` for every request (sync only, like most projects)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        django_sent_otel.on_delivered(request, raising_callback)
        return self.get_response(request)


MIDDLEWARE = [*_BASE_MIDDLEWARE, "tests.hardening.settings_faulty.RaisingCallbackMiddleware"]

_PLUGIN_LOGGER = {**_BASE_LOGGING["loggers"]["django_sent_otel"], "propagate": False}
LOGGING = {
    **_BASE_LOGGING,
    "loggers": {
        "django_sent_otel": _PLUGIN_LOGGER,
        # Signal.send_robust() logs a receiver's exception here (Django 5.0+).
        "django.dispatch": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
    },
}
