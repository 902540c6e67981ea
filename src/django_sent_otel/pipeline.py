"""The runtime: the enabled flag, the exclusion pattern and the sinks, in their fixed order.

Built from the parsed settings (:mod:`django_sent_otel.conf`) and the providers given to the
instrumentor on first use, and again after a ``SENT_OTEL_*`` setting changes or a receiver of
``response_delivered`` comes or goes. This is the one module that reads settings and providers:
each sink is built here from explicit arguments. Invalid settings have already fallen back to
their defaults, and a sink that cannot be built is left out, so building never raises on the
request path.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings

from . import metrics, signals, tracing
from ._logging import log_once
from ._names import DEFAULT_BUCKETS, DEFAULT_NAMESPACE
from .conf import PREFIX, ExcludedPaths, conf
from .delivery import Sink

logger = logging.getLogger(__name__)

DJANGO_EXCLUDED_URLS = "OTEL_PYTHON_DJANGO_EXCLUDED_URLS"
EXCLUDED_URLS = "OTEL_PYTHON_EXCLUDED_URLS"

#: Providers given to ``DeliveryInstrumentor().instrument(tracer_provider=..., meter_provider=...)``
#: (``tracer_provider``, ``meter_provider``); a setting naming a provider wins.
instrumented: dict[str, Any] = {}


class Runtime:
    """What the adapters need per request: the sinks, and whether a path is tracked."""

    __slots__ = (
        "enabled",
        "is_excluded",
        "metrics",
        "returned_sinks",
        "script_name",
        "sinks",
        "url_excluded",
        "watch_disconnects",
    )

    def __init__(
        self,
        enabled: bool,
        excluded: ExcludedPaths | None,
        sinks: Sequence[Sink],
        metrics: Any = None,
        url_excluded: Any = None,
        *,
        watch_disconnects: bool = False,
        script_name: str | None = None,
    ) -> None:
        self.enabled = enabled
        #: Django's ``FORCE_SCRIPT_NAME``, read once: the ASGI wrapper derives each request's
        #: ``path_info`` from it before Django runs.
        self.script_name = script_name
        #: ``SENT_OTEL_WATCH_DISCONNECTS``: watch every WSGI request's client.
        self.watch_disconnects = watch_disconnects
        #: Whether a path is excluded (run on every request).
        self.is_excluded: Callable[[str], bool] = (
            frozenset[str]().__contains__ if excluded is None else excluded.matcher()
        )
        self.sinks = tuple(sinks)
        # A sink with ``on_return`` False has nothing to do at handler return (see Sink).
        self.returned_sinks = tuple(s for s in self.sinks if s.on_return)
        self.metrics = metrics
        #: ``OTEL_PYTHON_DJANGO_EXCLUDED_URLS`` as the Django instrumentation reads it.
        self.url_excluded = url_excluded

    def is_url_excluded(self, request: Any) -> bool:
        """Whether the Django instrumentation excludes this request from its server span
        (it matches the URL without the query string)."""
        if self.url_excluded is None:
            return False
        try:
            return bool(self.url_excluded.url_disabled(request.build_absolute_uri("?")))
        except Exception:  # DisallowedHost: Django answers 400 on its own
            return False


def _url_excluded() -> Any:
    """The Django instrumentation's exclusion list, read by its own helper with its rules
    (``OTEL_PYTHON_DJANGO_EXCLUDED_URLS``, else ``OTEL_PYTHON_EXCLUDED_URLS``: comma-separated
    regular expressions searched in the URL). None when unset, or when opentelemetry-util-http
    (installed with the Django instrumentation) is absent."""
    value = os.environ.get(DJANGO_EXCLUDED_URLS, os.environ.get(EXCLUDED_URLS, ""))
    if not value:
        return None
    try:
        from opentelemetry.util.http import parse_excluded_urls
    except ImportError:
        return None
    try:
        return parse_excluded_urls(value)
    except Exception:
        logger.exception("django-sent-otel: %s is invalid; it is ignored", DJANGO_EXCLUDED_URLS)
        return None


def _otel_metrics_sink() -> Sink | None:
    """The OpenTelemetry metrics sink when ``SENT_OTEL_OTEL_METRICS_ENABLED`` asks for it."""
    if not conf.OTEL_METRICS_ENABLED:
        return None
    from .otel_metrics import OtelMetricsSink, get_otel_metrics

    try:
        return OtelMetricsSink(get_otel_metrics(instrumented.get("meter_provider")))
    except Exception:
        logger.exception("django-sent-otel: could not create the OpenTelemetry metrics")
        return None


def _tracing_sink() -> tracing.TracingSink | None:
    """The tracing sink the settings ask for: the named provider's tracer, else the one given
    to the instrumentor, else the global provider's (checked per request until an SDK sets
    one)."""
    if not conf.TRACING_ENABLED:
        return None
    named = conf.TRACER_PROVIDER
    if named is not None:
        try:
            return tracing.TracingSink(tracing.get_tracer(tracing.resolve_provider(named)))
        except Exception:
            message = "django-sent-otel: %r gave no tracer provider; using the global one"
            log_once(logger, message, named, key=f"tracer provider {named!r}", error=True)
    given = instrumented.get("tracer_provider")
    if given is not None:
        return tracing.TracingSink(tracing.get_tracer(given))
    return tracing.TracingSink(tracing.get_tracer(None), live=False)


def _metrics_sink(*, tracing: bool) -> metrics.MetricsSink | None:
    """The metrics sink the settings ask for (None when disabled). A namespace or bucket set
    that cannot be registered (a name clash) falls back to the defaults, then to no metrics.
    ``tracing``: whether a tracing sink runs before (the only source of exemplars)."""
    if not conf.METRICS_ENABLED:
        return None
    registry = conf.METRICS_REGISTRY
    default = (DEFAULT_NAMESPACE, None)
    for namespace, buckets in ((conf.METRICS_NAMESPACE, conf.METRICS_BUCKETS), default):
        try:
            built = metrics.get_metrics(registry, namespace, buckets or DEFAULT_BUCKETS)
        except Exception:
            message = "django-sent-otel: could not register the metrics of namespace %r"
            log_once(logger, message, namespace, key=f"metrics {namespace}", error=True)
            continue
        return metrics.MetricsSink(built, exemplars=conf.METRICS_EXEMPLARS, tracing=tracing)
    return None


def build() -> Runtime:
    # The order is the contract between sinks (see ``delivery.Sink``): tracing publishes
    # ``tracker.span``, which the metrics sink reads for exemplars, so tracing comes first
    # (tests/test_runtime.py holds it); the signal and callbacks come last, once every metric
    # and span is recorded.
    tracing_sink = _tracing_sink()
    metrics_sink = _metrics_sink(tracing=tracing_sink is not None)
    otel_sink = _otel_metrics_sink()
    sinks: list[Sink] = [s for s in (tracing_sink, metrics_sink, otel_sink) if s is not None]
    if signals.has_work():  # else on_delivered() adds it to the requests that need it
        sinks.append(signals.SIGNAL_SINK)
    return Runtime(
        conf.ENABLED,
        conf.EXCLUDED_PATHS,
        sinks,
        None if metrics_sink is None else metrics_sink.metrics,
        url_excluded=_url_excluded(),
        watch_disconnects=conf.WATCH_DISCONNECTS,
        script_name=getattr(settings, "FORCE_SCRIPT_NAME", None),
    )


#: The runtime once built (None until the first request, and after a settings change): the
#: middleware reads it directly on every request, else calls :func:`runtime`.
current: Runtime | None = None
_lock = threading.Lock()


def runtime() -> Runtime:
    """The current runtime, built once and rebuilt after a settings change."""
    built = current
    if built is not None:
        return built
    return _rebuild()


def _rebuild() -> Runtime:
    global current
    with _lock:
        if current is None:
            current = build()
        return current


def reset(**kwargs: Any) -> None:
    """``setting_changed`` receiver: forget the runtime when one of our settings, or
    ``FORCE_SCRIPT_NAME``, changed."""
    global current
    setting = kwargs.get("setting", PREFIX)
    if setting.startswith(PREFIX) or setting == "FORCE_SCRIPT_NAME":
        current = None


# Whether the signal sink runs depends on the signal's receivers: rebuild when they change.
signals.on_receivers_changed(reset)
