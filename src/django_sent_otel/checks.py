"""System checks: every ``SENT_OTEL_*`` setting is validated here, with a stable id."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from ._compat import DJANGO_OTEL_MIDDLEWARE
from .conf import PREFIX, SETTINGS, UNSET, PatternError, SettingError, raw

#: The tag the checks are registered under (bad settings are not upgrade issues).
CHECK_TAG = "django_sent_otel"
MIDDLEWARE_PATH = "django_sent_otel.middleware.DeliveryMiddleware"
#: The Django instrumentation's middleware, which goes before ours.
OTEL_MIDDLEWARE = DJANGO_OTEL_MIDDLEWARE

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

#: The id each setting's errors are reported under (a test keeps it complete).
SETTING_IDS = {
    "ENABLED": "E001",
    "EXCLUDED_PATHS": "E002",
    "METRICS_ENABLED": "E001",
    "METRICS_NAMESPACE": "E004",
    "METRICS_BUCKETS": "E005",
    "METRICS_REGISTRY": "E006",
    "METRICS_EXEMPLARS": "E001",
    "METRICS_TOKEN": "E007",
    "METRICS_ALLOWED_NETWORKS": "E008",
    "METRICS_CLIENT_IP_HEADER": "E009",
    "OTEL_METRICS_ENABLED": "E001",
    "TRACING_ENABLED": "E001",
    "TRACER_PROVIDER": "E010",
    "WATCH_DISCONNECTS": "E001",
}


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    """Parse every setting of the table; a parse error becomes its setting's id."""
    errors: list[CheckMessage] = []
    for setting in SETTINGS:
        try:
            setting.parse(raw(setting))
        except SettingError as exc:
            code = "E003" if isinstance(exc, PatternError) else SETTING_IDS[setting.name]
            message = IDS[code]
            if exc.got is not UNSET:
                message = f"{message} (got {exc.got!r})"
            hint = f"{PREFIX}{setting.name}: {exc.hint}"
            errors.append(Error(message, hint=hint, id=f"django_sent_otel.{code}"))
    return errors


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
