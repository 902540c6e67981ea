"""``opentelemetry-instrument`` support: the ``opentelemetry_instrumentor`` entry point.

With ``opentelemetry-instrument gunicorn ...`` the Django instrumentation puts its middleware
first; this instrumentor puts :class:`DeliveryMiddleware` right after it (or first when the
Django instrumentation is absent), so the ``response-delivered`` span is parented to the
Django server span with no code change.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from django.conf import settings
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from .checks import MIDDLEWARE_PATH, OTEL_MIDDLEWARE


def _middleware() -> list[str]:
    return list(getattr(settings, "MIDDLEWARE", None) or [])


class DeliveryInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    def instrumentation_dependencies(self) -> Collection[str]:
        return ("django >= 5.2",)

    def _instrument(self, **kwargs: Any) -> None:
        try:
            middleware = _middleware()
        except Exception:  # settings not configured: nothing to instrument
            return
        if MIDDLEWARE_PATH in middleware:
            return
        position = middleware.index(OTEL_MIDDLEWARE) + 1 if OTEL_MIDDLEWARE in middleware else 0
        middleware.insert(position, MIDDLEWARE_PATH)
        settings.MIDDLEWARE = middleware

    def _uninstrument(self, **kwargs: Any) -> None:
        middleware = _middleware()
        if MIDDLEWARE_PATH in middleware:
            middleware.remove(MIDDLEWARE_PATH)
            settings.MIDDLEWARE = middleware
