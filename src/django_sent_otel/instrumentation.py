"""``opentelemetry-instrument`` support: the ``opentelemetry_instrumentor`` entry point.

With ``opentelemetry-instrument gunicorn ...`` the Django instrumentation puts its middleware
first; this instrumentor puts :class:`DeliveryMiddleware` right after it (or first when the
Django instrumentation is absent), so the ``response-delivered`` span is parented to the
Django server span with no code change. ``instrument(tracer_provider=..., meter_provider=...)``
makes the span and the OpenTelemetry metrics use those providers instead of the global ones
(a ``SENT_OTEL_TRACER_PROVIDER`` setting still wins).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from django.conf import settings
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from . import pipeline
from .checks import MIDDLEWARE_PATH, OTEL_MIDDLEWARE
from .package import _instruments

_PROVIDERS = ("tracer_provider", "meter_provider")


def _middleware() -> list[str]:
    return list(getattr(settings, "MIDDLEWARE", None) or [])


class DeliveryInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    _inserted = False

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        given = {name: kwargs[name] for name in _PROVIDERS if kwargs.get(name) is not None}
        if given:
            pipeline.instrumented.update(given)
            pipeline.reset()
        try:
            middleware = _middleware()
        except Exception:  # settings not configured: nothing to instrument
            return
        if MIDDLEWARE_PATH in middleware:
            return
        position = middleware.index(OTEL_MIDDLEWARE) + 1 if OTEL_MIDDLEWARE in middleware else 0
        middleware.insert(position, MIDDLEWARE_PATH)
        settings.MIDDLEWARE = middleware
        self._inserted = True

    def _uninstrument(self, **kwargs: Any) -> None:
        if pipeline.instrumented:
            pipeline.instrumented.clear()
            pipeline.reset()
        if not self._inserted:
            return  # the project lists the middleware itself: leave it
        self._inserted = False
        middleware = _middleware()
        if MIDDLEWARE_PATH in middleware:
            middleware.remove(MIDDLEWARE_PATH)
            settings.MIDDLEWARE = middleware
