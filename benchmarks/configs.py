"""The configurations the benchmarks compare, by name (no Django import here).

The subprocesses receive the name in ``SENT_OTEL_BENCH_CONFIG``; :mod:`benchmarks.settings`
and :mod:`benchmarks.app` turn it into settings and OpenTelemetry setup.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Final

ENV_VAR: Final = "SENT_OTEL_BENCH_CONFIG"
PLUGIN: Final = "django_sent_otel.middleware.DeliveryMiddleware"
PROMETHEUS_BEFORE: Final = "django_prometheus.middleware.PrometheusBeforeMiddleware"
PROMETHEUS_AFTER: Final = "django_prometheus.middleware.PrometheusAfterMiddleware"


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    middleware: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    #: An SDK TracerProvider with a BatchSpanProcessor and a counting exporter, made global.
    sdk: bool = False
    #: An SDK MeterProvider with an in-memory reader (aggregation, no export), made global.
    sdk_metrics: bool = False
    #: ``DjangoInstrumentor().instrument()`` before the handler is built.
    otel_django: bool = False
    #: Served by Django's ASGIHandler (wrapped by the plugin's ASGI wrapper when it is on).
    asgi: bool = False
    #: An ASGI wrapper class (dotted path) around Django's handler, for a floor without the
    #: plugin.
    asgi_wrapper: str = ""

    @property
    def plugin(self) -> bool:
        return PLUGIN in self.middleware

    @property
    def requires(self) -> tuple[str, ...]:
        """Modules this configuration needs beyond Django and the plugin's dependencies."""
        needed: list[str] = []
        if "django_prometheus" in self.apps:
            needed.append("django_prometheus")
        if self.sdk or self.sdk_metrics:
            needed.append("opentelemetry.sdk")
        if self.otel_django:
            needed.append("opentelemetry.instrumentation.django")
        return tuple(needed)

    def missing(self) -> list[str]:
        """The required modules that are not installed (the row is then skipped)."""
        return [name for name in self.requires if _find_spec(name) is None]


def _find_spec(name: str) -> Any:
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None


_PLUGIN_APPS = ("django_sent_otel",)
_NO_TRACING = {"SENT_OTEL_TRACING_ENABLED": False}

CONFIGS: Final = {
    c.name: c
    for c in (
        Config("bare", "bare Django (MIDDLEWARE=[])"),
        Config(
            "plugin-metrics",
            "plugin, metrics only (SENT_OTEL_TRACING_ENABLED=False)",
            (PLUGIN,),
            _PLUGIN_APPS,
            _NO_TRACING,
        ),
        Config("plugin-noop", "plugin, tracing with the API no-op tracer", (PLUGIN,), _PLUGIN_APPS),
        Config(
            "plugin-watch",
            "plugin, metrics only, every client watched (SENT_OTEL_WATCH_DISCONNECTS=True)",
            (PLUGIN,),
            _PLUGIN_APPS,
            {**_NO_TRACING, "SENT_OTEL_WATCH_DISCONNECTS": True},
        ),
        Config("plugin-sdk", "plugin, SDK spans + metrics", (PLUGIN,), _PLUGIN_APPS, sdk=True),
        Config(
            "plugin-otel-metrics",
            "plugin, metrics + OTel metrics (SDK MeterProvider), no tracing",
            (PLUGIN,),
            _PLUGIN_APPS,
            {**_NO_TRACING, "SENT_OTEL_OTEL_METRICS_ENABLED": True},
            sdk_metrics=True,
        ),
        Config(
            "django-prometheus",
            "django-prometheus",
            (PROMETHEUS_BEFORE, PROMETHEUS_AFTER),
            ("django_prometheus",),
        ),
        Config(
            "otel-django", "opentelemetry-instrumentation-django + SDK", sdk=True, otel_django=True
        ),
        Config(
            "otel-django-plugin",
            "otel-django + SDK + plugin",
            (PLUGIN,),
            _PLUGIN_APPS,
            sdk=True,
            otel_django=True,
        ),
        Config(
            "floor-metrics",
            "floor: close() hook + 4 prometheus_client updates, no plugin",
            ("benchmarks.floor.MetricsFloorMiddleware",),
        ),
        Config(
            "floor-aggregate",
            "floor: close() hook + the same numbers in plain lists under one lock, no plugin",
            ("benchmarks.floor.AggregateFloorMiddleware",),
        ),
        Config(
            "floor-span",
            "floor: one SDK span with 5 attributes, no plugin",
            ("benchmarks.floor.SpanFloorMiddleware",),
            sdk=True,
        ),
        Config(
            "floor-stream",
            "floor: streaming body through one generator layer, no plugin",
            ("benchmarks.floor.StreamFloorMiddleware",),
        ),
        Config("asgi-bare", "ASGI bare Django", asgi=True),
        Config(
            "asgi-floor-send",
            "ASGI floor: every message through one async send wrapper, no plugin",
            asgi=True,
            asgi_wrapper="benchmarks.floor.SendFloorASGI",
        ),
        Config(
            "asgi-floor-count",
            "ASGI floor: every message through one plain function counting the bytes of body "
            "messages with more to come, no plugin",
            asgi=True,
            asgi_wrapper="benchmarks.floor.CountFloorASGI",
        ),
        Config(
            "asgi-plugin-metrics",
            "ASGI plugin (wrapper + middleware), metrics only",
            (PLUGIN,),
            _PLUGIN_APPS,
            _NO_TRACING,
            asgi=True,
        ),
        Config(
            "asgi-plugin-sdk",
            "ASGI plugin (wrapper + middleware), SDK spans + metrics",
            (PLUGIN,),
            _PLUGIN_APPS,
            sdk=True,
            asgi=True,
        ),
    )
}


def get(name: str) -> Config:
    try:
        return CONFIGS[name]
    except KeyError:
        raise SystemExit(
            f"unknown benchmark configuration {name!r}; one of {list(CONFIGS)}"
        ) from None


#: The configurations of each section, in the order their rows are printed.
WSGI_CONFIGS: Final = (
    "bare",
    "plugin-metrics",
    "plugin-noop",
    "plugin-sdk",
    "django-prometheus",
    "otel-django",
    "otel-django-plugin",
    "floor-metrics",
    "floor-span",
)
ASGI_CONFIGS: Final = ("asgi-bare", "asgi-plugin-metrics", "asgi-plugin-sdk")
GUNICORN_CONFIGS: Final = ("bare", "plugin-metrics", "plugin-sdk")
UVICORN_CONFIGS: Final = ("asgi-bare", "asgi-plugin-metrics", "asgi-plugin-sdk")
