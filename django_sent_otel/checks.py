"""System checks: every ``SENT_OTEL_*`` setting is validated here, with a stable id."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from .conf import PREFIX
from .pipeline import valid_buckets, valid_meta_key, valid_token

#: The tag the checks are registered under (bad settings are not upgrade issues).
CHECK_TAG = "django_sent_otel"
MIDDLEWARE_PATH = "django_sent_otel.middleware.DeliveryMiddleware"
OTEL_MIDDLEWARE = (
    "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
)

#: Every id this module can emit, with what it means (kept unique by a test).
IDS = {
    "E001": "a boolean setting is not a bool",
    "E002": "SENT_OTEL_EXCLUDED_PATHS is not a list of strings",
    "E003": "SENT_OTEL_EXCLUDED_PATHS has a pattern that does not compile",
    "E004": "SENT_OTEL_METRICS_NAMESPACE is not a valid Prometheus name",
    "E005": "SENT_OTEL_METRICS_BUCKETS is not a non-empty increasing list of numbers",
    "E006": "SENT_OTEL_METRICS_REGISTRY does not name a CollectorRegistry",
    "E007": "SENT_OTEL_METRICS_TOKEN is not a usable bearer token",
    "E008": "SENT_OTEL_METRICS_ALLOWED_NETWORKS has an entry that is not a network",
    "E009": "SENT_OTEL_METRICS_CLIENT_IP_HEADER is not a request.META key",
    "E010": "SENT_OTEL_TRACER_PROVIDER does not name a tracer provider",
    "W001": "DeliveryMiddleware is not the first middleware",
    "W002": "DeliveryMiddleware is missing from MIDDLEWARE",
}

_MISSING = object()
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _error(code: str, hint: str, value: Any = _MISSING) -> Error:
    message = IDS[code]
    if value is not _MISSING:
        message = f"{message} (got {value!r})"
    return Error(message, hint=hint, id=f"django_sent_otel.{code}")


def _setting(name: str) -> Any:
    return getattr(settings, PREFIX + name, _MISSING)


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name in (
        "ENABLED",
        "METRICS_ENABLED",
        "METRICS_EXEMPLARS",
        "OTEL_METRICS_ENABLED",
        "TRACING_ENABLED",
    ):
        value = _setting(name)
        if value is not _MISSING and not isinstance(value, bool):
            errors.append(_error("E001", f"Set {PREFIX}{name} to True or False.", value))
    errors += _check_excluded(_setting("EXCLUDED_PATHS"))
    namespace = _setting("METRICS_NAMESPACE")
    if namespace is not _MISSING and not (
        isinstance(namespace, str) and (namespace == "" or _NAME.fullmatch(namespace))
    ):
        errors.append(
            _error("E004", "Use letters, digits and underscores, e.g. 'django'.", namespace)
        )
    buckets = _setting("METRICS_BUCKETS")
    if buckets is not _MISSING and valid_buckets(buckets) is None:
        errors.append(_error("E005", "Use e.g. [0.05, 0.1, 0.5, 1, 5, 30].", buckets))
    errors += _check_import("METRICS_REGISTRY", "E006", _is_registry)
    token = _setting("METRICS_TOKEN")
    if token is not _MISSING and token is not None and token != "" and not valid_token(token):
        errors.append(
            _error(
                "E007",
                "Use a random string of at least 16 URL-safe characters (no whitespace: strip "
                "a token read from a file), or None.",
            )
        )
    errors += _check_networks(_setting("METRICS_ALLOWED_NETWORKS"))
    header = _setting("METRICS_CLIENT_IP_HEADER")
    if header is not _MISSING and header is not None and not valid_meta_key(header):
        errors.append(_error("E009", "Use a META key such as 'HTTP_X_FORWARDED_FOR'.", header))
    errors += _check_import("TRACER_PROVIDER", "E010", _is_provider)
    return errors


def _check_excluded(value: Any) -> list[CheckMessage]:
    if value is _MISSING:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [_error("E002", "Use a list of regular expressions, e.g. [r'^/health$'].", value)]
    errors: list[CheckMessage] = []
    for pattern in value:
        if not isinstance(pattern, str):
            errors.append(_error("E002", "Every entry must be a string.", pattern))
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            errors.append(_error("E003", f"{pattern!r}: {exc}"))
    return errors


def _check_networks(value: Any) -> list[CheckMessage]:
    if value is _MISSING or value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [_error("E008", "Use a list such as ['127.0.0.0/8', '10.0.0.0/8'].", value)]
    errors: list[CheckMessage] = []
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except (TypeError, ValueError):
            errors.append(_error("E008", "Use CIDR notation such as '10.0.0.0/8'.", entry))
    return errors


def _is_registry(obj: Any) -> bool:
    from prometheus_client import CollectorRegistry

    return isinstance(obj, CollectorRegistry)


def _is_provider(obj: Any) -> bool:
    # A provider instance or class; a factory is accepted unseen (calling it here could have
    # side effects), and if it returns no provider the runtime logs it and uses the global one.
    if isinstance(obj, type):
        return callable(getattr(obj, "get_tracer", None))
    return callable(getattr(obj, "get_tracer", None)) or callable(obj)


def _check_import(name: str, code: str, valid: Any) -> list[CheckMessage]:
    value = _setting(name)
    if value is _MISSING or value is None:
        return []
    hint = f"Set {PREFIX}{name} to a dotted path such as 'myproject.monitoring.thing', or None."
    if not isinstance(value, str):
        return [_error(code, hint, value)]
    try:
        obj = import_string(value)
    except Exception as exc:  # ImportError, and ValueError/TypeError for ".x" or "..x"
        return [_error(code, f"{hint} Import failed: {exc}", value)]
    return [] if valid(obj) else [_error(code, hint, value)]


def check_middleware(**kwargs: Any) -> list[CheckMessage]:
    middleware = [m for m in getattr(settings, "MIDDLEWARE", None) or [] if m != OTEL_MIDDLEWARE]
    if MIDDLEWARE_PATH not in middleware:
        return [
            Warning(
                IDS["W002"],
                hint=f"Add {MIDDLEWARE_PATH!r} as the first entry of MIDDLEWARE.",
                id="django_sent_otel.W002",
            )
        ]
    if middleware[0] != MIDDLEWARE_PATH:
        return [
            Warning(
                IDS["W001"],
                hint="Put it first so that it times the whole request and sees every response "
                "(after OpenTelemetry's own middleware, which instrumentation inserts first).",
                id="django_sent_otel.W001",
            )
        ]
    return []
