"""Prometheus metrics, recorded once per tracked response from its :class:`Delivery`.

Labelled children are bound once per label set and cached, so the hot path is a dict lookup
plus prometheus_client's own increments. Labels are bounded: a fixed method set, the route
template (or ``unmatched``), the status code and the failure reason.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Sequence
from time import monotonic
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from .conf import DEFAULT_BUCKETS
from .delivery import Delivery, Tracker

_Children = tuple[Any, Any, Any, Any]
_Key = tuple[str, str, int, str | None]
_Exemplar = dict[str, str] | None
_Exemplars = tuple[_Exemplar, _Exemplar, _Exemplar]

#: At most one exemplar per series (histogram bucket, counter) per this many seconds. Prometheus
#: keeps only the latest exemplar of a series and scrapes every few seconds, so this loses no
#: exemplar a scrape would show, and saves prometheus_client's exemplar validation (about 2 us
#: per update) on nearly every request.
EXEMPLAR_INTERVAL: Final = 1.0


def multiprocess_dir() -> str | None:
    """The prometheus_client multiprocess directory, when multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class DeliveryMetrics:
    """The six delivery metrics of one namespace, registered on one registry."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = REGISTRY,
        namespace: str = "django",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        self.registry = registry
        self.namespace = namespace
        self.buckets = tuple(buckets)
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
            buckets=self.buckets,
            **common,
        )
        self.send_duration = Histogram(
            "http_send_duration_seconds",
            "Time from the handler returning the response until it was delivered.",
            ["method", "route"],
            buckets=self.buckets,
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
        # The gauge's value object, updated directly on every request (Gauge.inc/dec add a
        # check and a call each); the public methods when prometheus_client has no such object.
        value: Any = getattr(self.sending, "_value", None)
        if callable(getattr(value, "inc", None)):
            self.sending_inc = value.inc
        else:
            self.sending_inc = self.sending.inc
        self._children: dict[_Key, _Children] = {}
        self._lock = threading.Lock()
        self._exemplar_at: dict[tuple[_Key, int], float] = {}

    @property
    def collectors(self) -> tuple[Any, ...]:
        return (
            self.delivered,
            self.failures,
            self.duration,
            self.send_duration,
            self.sent_bytes,
            self.sending,
        )

    def unregister(self) -> None:
        if self.registry is not None:
            for collector in self.collectors:
                self.registry.unregister(collector)

    def _bind(self, key: _Key) -> _Children:
        method, route, status_code, reason = key
        status = str(status_code)
        if reason is None:
            outcome = self.delivered.labels(method, route, status)
        else:
            outcome = self.failures.labels(method, route, status, reason)
        children = (
            outcome,
            self.duration.labels(method, route),
            self.send_duration.labels(method, route),
            self.sent_bytes.labels(method, route),
        )
        with self._lock:
            self._children[key] = children
        return children

    def record(self, delivery: Delivery, span: Any = None) -> None:
        """Count one finished delivery (histograms observe delivered responses only).

        ``span``: the delivery's span; its trace becomes an exemplar on the delivered counter
        and the two histogram buckets observed, when sampled and when those series have had
        none for :data:`EXEMPLAR_INTERVAL`.
        """
        key = (delivery.method, delivery.route, delivery.status_code, delivery.reason)
        children = self._children.get(key) or self._bind(key)
        outcome, duration, send_duration, sent_bytes = children
        if delivery.reason is None:
            due = None if span is None else self._exemplars(key, delivery, span)
            if due is None:
                outcome.inc()
                duration.observe(delivery.duration)
                send_duration.observe(delivery.send_duration)
            else:
                outcome.inc(1, due[0])
                duration.observe(delivery.duration, due[1])
                send_duration.observe(delivery.send_duration, due[2])
        else:
            outcome.inc()
        sent_bytes.inc(delivery.bytes_sent)

    def _exemplars(self, key: _Key, delivery: Delivery, span: Any) -> _Exemplars | None:
        """The exemplar for each of the three series a delivery updates (None where one is
        not due), or None when the span is not sampled or no series is due."""
        ctx = span.get_span_context()
        if not ctx.trace_flags.sampled:
            return None
        buckets = self.buckets
        now = monotonic()
        slots = (
            self._due(key, -1, now),
            self._due(key, bisect_left(buckets, delivery.duration), now),
            self._due(key, 100 + bisect_left(buckets, delivery.send_duration), now),
        )
        if not any(slots):
            return None
        exemplar = {
            "trace_id": format(ctx.trace_id, "032x"),
            "span_id": format(ctx.span_id, "016x"),
        }
        return (
            exemplar if slots[0] else None,
            exemplar if slots[1] else None,
            exemplar if slots[2] else None,
        )

    def _due(self, key: _Key, slot: int, now: float) -> bool:
        """Whether a series (a counter, or one histogram bucket) may take an exemplar now."""
        at = self._exemplar_at
        last = at.get((key, slot))
        if last is not None and now - last < EXEMPLAR_INTERVAL:
            return False
        at[(key, slot)] = now
        return True


_cache: dict[tuple[int, str], DeliveryMetrics] = {}
_cache_lock = threading.Lock()


def get_metrics(
    registry: CollectorRegistry, namespace: str, buckets: Sequence[float]
) -> DeliveryMetrics:
    """The metrics for a registry and namespace, created once (reused when settings reload).

    Building the same names twice on one registry would raise "Duplicated timeseries"; a
    bucket change replaces the histograms' collectors instead.
    """
    key = (id(registry), namespace)
    with _cache_lock:
        old = _cache.get(key)
        if old is not None and old.registry is not registry:
            old = None  # a registry that was garbage-collected and its id reused
        if old is not None and old.buckets == tuple(buckets):
            return old
        # Build unregistered first: invalid buckets raise here, leaving the old set intact.
        metrics = DeliveryMetrics(registry=None, namespace=namespace, buckets=buckets)
        if old is not None:
            old.unregister()
        try:
            _register(registry, metrics.collectors)
        except Exception:
            if old is not None:
                _register(registry, old.collectors)
            raise
        metrics.registry = registry
        _cache[key] = metrics
        return metrics


def _register(registry: CollectorRegistry, collectors: Sequence[Any]) -> None:
    """Register all or none (a name clash with another collector raises ValueError)."""
    done: list[Any] = []
    try:
        for collector in collectors:
            registry.register(collector)
            done.append(collector)
    except Exception:
        for collector in done:
            registry.unregister(collector)
        raise


class MetricsSink:
    """Updates the in-flight gauge and records each delivery."""

    __slots__ = ("exemplars", "metrics")

    def __init__(self, metrics: DeliveryMetrics, *, exemplars: bool = True) -> None:
        self.metrics = metrics
        # prometheus_client cannot store exemplars in multiprocess mode.
        self.exemplars = exemplars and multiprocess_dir() is None

    def handler_returned(self, tracker: Tracker) -> None:
        self.metrics.sending_inc(1)

    def finished(self, tracker: Tracker, delivery: Delivery) -> None:
        if tracker.returned_at is not None:
            self.metrics.sending_inc(-1)
        self.metrics.record(delivery, tracker.span if self.exemplars else None)


def build_sink() -> MetricsSink | None:
    """The metrics sink the settings ask for (None when disabled). A namespace or bucket set
    that cannot be registered (a name clash) falls back to the defaults, then to no metrics."""
    from .conf import conf
    from .delivery import log_once, logger

    if not conf.METRICS_ENABLED:
        return None
    registry = conf.METRICS_REGISTRY
    for namespace, buckets in ((conf.METRICS_NAMESPACE, conf.METRICS_BUCKETS), ("django", None)):
        try:
            metrics = get_metrics(registry, namespace, buckets or DEFAULT_BUCKETS)
        except Exception:
            message = "django-sent-otel: could not register the metrics of namespace %r"
            log_once(logger, message, namespace, key=f"metrics {namespace}", error=True)
            continue
        return MetricsSink(metrics, exemplars=conf.METRICS_EXEMPLARS)
    return None
