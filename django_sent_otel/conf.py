"""Settings, read lazily from ``django.conf.settings`` so ``override_settings`` just works.

Every property returns the raw value or its default; :mod:`django_sent_otel.checks` validates
them. Code on the request path never trusts a raw value: it goes through :func:`runtime`, which
is rebuilt when a ``SENT_OTEL_*`` setting changes and falls back to the defaults for anything
invalid (the system checks report it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from django.conf import settings

PREFIX: Final = "SENT_OTEL_"

# OpenTelemetry's HTTP server duration buckets, extended for long downloads.
DEFAULT_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
)
DEFAULT_EXCLUDED_PATHS: Final = (r"^/metrics$",)


class Settings:
    """Typed, lazily read ``SENT_OTEL_*`` settings (see the README's "Settings")."""

    def _get(self, name: str, default: Any) -> Any:
        return getattr(settings, PREFIX + name, default)

    @property
    def ENABLED(self) -> bool:
        return bool(self._get("ENABLED", True))

    @property
    def EXCLUDED_PATHS(self) -> Sequence[str]:
        value: Sequence[str] = self._get("EXCLUDED_PATHS", DEFAULT_EXCLUDED_PATHS)
        return value

    @property
    def METRICS_ENABLED(self) -> bool:
        return bool(self._get("METRICS_ENABLED", True))

    @property
    def METRICS_NAMESPACE(self) -> str:
        value: str = self._get("METRICS_NAMESPACE", "django")
        return value

    @property
    def METRICS_BUCKETS(self) -> Sequence[float]:
        value: Sequence[float] = self._get("METRICS_BUCKETS", DEFAULT_BUCKETS)
        return value

    @property
    def METRICS_REGISTRY(self) -> str | None:
        value: str | None = self._get("METRICS_REGISTRY", None)
        return value

    @property
    def METRICS_EXEMPLARS(self) -> bool:
        return bool(self._get("METRICS_EXEMPLARS", True))

    @property
    def METRICS_TOKEN(self) -> str | None:
        value: str | None = self._get("METRICS_TOKEN", None)
        return value

    @property
    def METRICS_ALLOWED_NETWORKS(self) -> Sequence[str] | None:
        value: Sequence[str] | None = self._get("METRICS_ALLOWED_NETWORKS", None)
        return value

    @property
    def METRICS_CLIENT_IP_HEADER(self) -> str | None:
        value: str | None = self._get("METRICS_CLIENT_IP_HEADER", None)
        return value

    @property
    def OTEL_METRICS_ENABLED(self) -> bool:
        return bool(self._get("OTEL_METRICS_ENABLED", False))

    @property
    def TRACING_ENABLED(self) -> bool:
        return bool(self._get("TRACING_ENABLED", True))

    @property
    def TRACER_PROVIDER(self) -> str | None:
        value: str | None = self._get("TRACER_PROVIDER", None)
        return value


conf = Settings()
