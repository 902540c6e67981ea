"""The runtime view of the settings: enabled flag, exclusion pattern and the sinks, in order.

Built on first use and rebuilt when a ``SENT_OTEL_*`` setting changes. Invalid values (which
the system checks report with ids) fall back to defaults here: a bad setting never raises on
the request path.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import math
import os
import re
import secrets
import threading
from collections.abc import Sequence
from typing import Any

from django.utils.module_loading import import_string

from .conf import DEFAULT_BUCKETS, DEFAULT_EXCLUDED_PATHS, PREFIX, conf
from .delivery import Sink

logger = logging.getLogger(__name__)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
_META_KEY = re.compile(r"[A-Z][A-Z0-9_]*")
DJANGO_EXCLUDED_URLS = "OTEL_PYTHON_DJANGO_EXCLUDED_URLS"
EXCLUDED_URLS = "OTEL_PYTHON_EXCLUDED_URLS"


class Runtime:
    """Validated settings and the sinks built from them.

    ``token`` is ``None`` when /metrics needs no token; ``networks`` is ``None`` when every
    client may scrape. An invalid token or network list fails closed (nobody matches).
    """

    __slots__ = (
        "enabled",
        "excluded",
        "ip_header",
        "metrics",
        "networks",
        "returned_sinks",
        "sinks",
        "token",
        "url_excluded",
    )

    def __init__(
        self,
        enabled: bool,
        excluded: re.Pattern[str] | None,
        sinks: Sequence[Sink],
        metrics: Any = None,
        *,
        token: bytes | None = None,
        networks: tuple[Network, ...] | None = None,
        ip_header: str | None = None,
        url_excluded: Any = None,
    ) -> None:
        self.enabled = enabled
        self.excluded = excluded
        self.sinks = tuple(sinks)
        # A sink whose class sets ``on_return = False`` has nothing to do at handler return.
        self.returned_sinks = tuple(s for s in self.sinks if getattr(s, "on_return", True))
        self.metrics = metrics
        self.token = token
        self.networks = networks
        self.ip_header = ip_header
        #: ``OTEL_PYTHON_DJANGO_EXCLUDED_URLS`` as the Django instrumentation reads it.
        self.url_excluded = url_excluded

    def is_excluded(self, path: str) -> bool:
        return self.excluded is not None and self.excluded.search(path) is not None

    def is_url_excluded(self, request: Any) -> bool:
        """Whether the Django instrumentation excludes this request from its server span
        (it matches the URL without the query string)."""
        if self.url_excluded is None:
            return False
        try:
            return bool(self.url_excluded.url_disabled(request.build_absolute_uri("?")))
        except Exception:  # DisallowedHost: Django answers 400 on its own
            return False


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
    value = conf.EXCLUDED_PATHS
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError("a list of regular expressions is needed")
    patterns = list(value)
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError("every pattern must be a string")
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


def valid_buckets(value: Any) -> tuple[float, ...] | None:
    """Upper bounds without the implicit ``+Inf``, or None when ``value`` is not usable.

    Usable: a non-empty, strictly increasing sequence of positive finite numbers, optionally
    ending with ``+Inf`` (prometheus_client adds it anyway).
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return None
    if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in value):
        return None
    bounds = [float(b) for b in value]
    if bounds and bounds[-1] == math.inf:
        bounds.pop()
    if not bounds or not all(math.isfinite(b) for b in bounds) or bounds[0] <= 0:
        return None
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        return None
    return tuple(bounds)


def _buckets() -> tuple[float, ...]:
    buckets = valid_buckets(conf.METRICS_BUCKETS)
    if buckets is None:
        raise ValueError("buckets must be an increasing sequence of positive numbers")
    return buckets


def resolve_provider(obj: Any) -> Any:
    """A tracer provider from what the setting names: an instance, a class or a factory."""
    if isinstance(obj, type) or not hasattr(obj, "get_tracer"):
        if not callable(obj):
            raise TypeError(f"{obj!r} is not a tracer provider")
        obj = obj()
    if not callable(getattr(obj, "get_tracer", None)):
        raise TypeError(f"{obj!r} is not a tracer provider")
    return obj


#: Providers given to ``DeliveryInstrumentor().instrument(tracer_provider=..., meter_provider=...)``
#: (``tracer_provider``, ``meter_provider``); a setting naming a provider wins.
instrumented: dict[str, Any] = {}


def _given_tracer() -> Any:
    """The tracer of the provider ``SENT_OTEL_TRACER_PROVIDER`` names, else of the one the
    instrumentor was given; None when neither is."""
    from .tracing import get_tracer

    path = conf.TRACER_PROVIDER
    if path:
        return get_tracer(resolve_provider(import_string(path)))
    provider = instrumented.get("tracer_provider")
    return None if provider is None else get_tracer(provider)


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


def valid_meta_key(value: Any) -> bool:
    """A ``request.META`` key such as ``HTTP_X_FORWARDED_FOR``."""
    return isinstance(value, str) and _META_KEY.fullmatch(value) is not None


def valid_token(value: Any) -> bool:
    return isinstance(value, str) and len(value) >= 16 and _TOKEN.fullmatch(value) is not None


def _token() -> bytes | None:
    value = conf.METRICS_TOKEN
    if value is None or value == "":
        return None
    if not valid_token(value):
        # Fail closed: a secret nobody knows, so /metrics answers 401 until it is fixed.
        _invalid("METRICS_TOKEN")
        return secrets.token_bytes(32)
    return value.encode()


def _networks() -> tuple[Network, ...] | None:
    value = conf.METRICS_ALLOWED_NETWORKS
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        _invalid("METRICS_ALLOWED_NETWORKS")  # fail closed: nobody is allowed
        return ()
    if not value:
        return None
    networks: list[Network] = []
    for entry in value:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except (TypeError, ValueError):
            _invalid("METRICS_ALLOWED_NETWORKS")  # the entry is skipped
    return tuple(networks)


def _ip_header() -> str | None:
    value = conf.METRICS_CLIENT_IP_HEADER
    if value is None:
        return None
    if not valid_meta_key(value):
        _invalid("METRICS_CLIENT_IP_HEADER")  # the peer address is used
        return None
    return value


def _invalid(name: str) -> None:
    logger.error("django-sent-otel: setting %s%s is invalid (see manage.py check)", PREFIX, name)


def build() -> Runtime:
    from .signals import SignalSink

    enabled = _safe("ENABLED", lambda: conf.ENABLED, True)
    default_excluded = re.compile("|".join(DEFAULT_EXCLUDED_PATHS))
    excluded = _safe("EXCLUDED_PATHS", _excluded, default_excluded)
    sinks: list[Sink] = []
    metrics = None
    if _safe("TRACING_ENABLED", lambda: conf.TRACING_ENABLED, True):
        from .tracing import TracingSink, get_tracer

        tracer = _safe("TRACER_PROVIDER", _given_tracer, None)
        if tracer is not None:
            sinks.append(TracingSink(tracer))
        else:  # the global provider, which may still be the API's proxy
            sinks.append(TracingSink(get_tracer(None), live=False))
    if _safe("METRICS_ENABLED", lambda: conf.METRICS_ENABLED, True):
        from prometheus_client import REGISTRY

        from .metrics import MetricsSink, get_metrics

        registry = _safe("METRICS_REGISTRY", _registry, REGISTRY)
        namespace = _safe("METRICS_NAMESPACE", lambda: str(conf.METRICS_NAMESPACE), "django")
        buckets = _safe("METRICS_BUCKETS", _buckets, DEFAULT_BUCKETS)
        metrics = _safe(
            "METRICS_NAMESPACE", lambda: get_metrics(registry, namespace, buckets), None
        ) or _safe(
            "METRICS_REGISTRY", lambda: get_metrics(registry, "django", DEFAULT_BUCKETS), None
        )
        if metrics is not None:
            exemplars = _safe("METRICS_EXEMPLARS", lambda: conf.METRICS_EXEMPLARS, True)
            sinks.append(MetricsSink(metrics, exemplars=exemplars))
    if _safe("OTEL_METRICS_ENABLED", lambda: conf.OTEL_METRICS_ENABLED, False):
        from .otel_metrics import OtelMetricsSink, get_otel_metrics

        provider = instrumented.get("meter_provider")
        otel = _safe("OTEL_METRICS_ENABLED", lambda: get_otel_metrics(provider), None)
        if otel is not None:
            sinks.append(OtelMetricsSink(otel))
    sinks.append(SignalSink())
    return Runtime(
        enabled,
        excluded,
        sinks,
        metrics,
        token=_safe("METRICS_TOKEN", _token, secrets.token_bytes(32)),
        networks=_safe("METRICS_ALLOWED_NETWORKS", _networks, ()),
        ip_header=_safe("METRICS_CLIENT_IP_HEADER", _ip_header, None),
        url_excluded=_url_excluded(),
    )


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
