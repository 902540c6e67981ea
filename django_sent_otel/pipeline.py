"""The runtime view of the settings: enabled flag, exclusion pattern and the sinks, in order.

Built on first use and rebuilt when a ``SENT_OTEL_*`` setting changes. Invalid values (which
the system checks report with ids) fall back to defaults here: a bad setting never raises on
the request path.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from django.utils.module_loading import import_string

from .conf import DEFAULT_BUCKETS, DEFAULT_EXCLUDED_PATHS, PREFIX, conf
from .delivery import Sink

logger = logging.getLogger("django_sent_otel")


class Runtime:
    __slots__ = ("enabled", "excluded", "metrics", "sinks")

    def __init__(
        self,
        enabled: bool,
        excluded: re.Pattern[str] | None,
        sinks: Sequence[Sink],
        metrics: Any = None,
    ) -> None:
        self.enabled = enabled
        self.excluded = excluded
        self.sinks = tuple(sinks)
        self.metrics = metrics

    def is_excluded(self, path: str) -> bool:
        return self.excluded is not None and self.excluded.search(path) is not None


def _safe(name: str, build: Any, fallback: Any) -> Any:
    try:
        return build()
    except Exception:
        logger.exception(
            "django-sent-otel: setting %s%s is invalid (see manage.py check); using the default",
            PREFIX,
            name,
        )
        return fallback


def _excluded() -> re.Pattern[str] | None:
    patterns = list(conf.EXCLUDED_PATHS)
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def _registry() -> Any:
    from prometheus_client import REGISTRY, CollectorRegistry

    path = conf.METRICS_REGISTRY
    if not path:
        return REGISTRY
    registry = import_string(path)
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(f"{path} is not a prometheus_client CollectorRegistry")
    return registry


def _buckets() -> tuple[float, ...]:
    buckets = tuple(float(b) for b in conf.METRICS_BUCKETS)
    if not buckets or list(buckets) != sorted(set(buckets)):
        raise ValueError("buckets must be a non-empty increasing sequence")
    return buckets


def _tracer_provider() -> Any:
    path = conf.TRACER_PROVIDER
    if not path:
        return None
    provider = import_string(path)
    return provider() if callable(provider) and not hasattr(provider, "get_tracer") else provider


def build() -> Runtime:
    from .signals import SignalSink

    enabled = _safe("ENABLED", lambda: conf.ENABLED, True)
    default_excluded = re.compile("|".join(DEFAULT_EXCLUDED_PATHS))
    excluded = _safe("EXCLUDED_PATHS", _excluded, default_excluded)
    sinks: list[Sink] = []
    metrics = None
    if _safe("TRACING_ENABLED", lambda: conf.TRACING_ENABLED, True):
        from .tracing import TracingSink, get_tracer

        provider = _safe("TRACER_PROVIDER", _tracer_provider, None)
        sinks.append(TracingSink(get_tracer(provider)))
    if _safe("METRICS_ENABLED", lambda: conf.METRICS_ENABLED, True):
        from prometheus_client import REGISTRY

        from .metrics import MetricsSink, get_metrics

        registry = _safe("METRICS_REGISTRY", _registry, REGISTRY)
        namespace = _safe("METRICS_NAMESPACE", lambda: str(conf.METRICS_NAMESPACE), "django")
        buckets = _safe("METRICS_BUCKETS", _buckets, DEFAULT_BUCKETS)
        metrics = _safe(
            "METRICS_NAMESPACE",
            lambda: get_metrics(registry, namespace, buckets),
            None,
        ) or get_metrics(registry, "django", buckets)
        sinks.append(
            MetricsSink(
                metrics, exemplars=_safe("METRICS_EXEMPLARS", lambda: conf.METRICS_EXEMPLARS, True)
            )
        )
    sinks.append(SignalSink())
    return Runtime(enabled, excluded, sinks, metrics)


_runtime: Runtime | None = None
_lock = threading.Lock()


def runtime() -> Runtime:
    """The current runtime, built once and rebuilt after a settings change."""
    current = _runtime
    if current is not None:
        return current
    return _rebuild()


def _rebuild() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build()
        return _runtime


def reset(**kwargs: Any) -> None:
    """``setting_changed`` receiver: forget the runtime when one of our settings changed."""
    global _runtime
    setting = kwargs.get("setting", PREFIX)
    if setting.startswith(PREFIX):
        _runtime = None
