"""Settings: one table of every ``SENT_OTEL_*`` setting, its default and the rule it follows.

Each setting's parser turns the raw value into what the runtime uses, or raises
:class:`SettingError` with a hint. :mod:`django_sent_otel.checks` reports those errors with
stable ids; the runtime (each sink building itself, the ``/metrics`` view) reads the parsed
value through :data:`conf`, which falls back to the error's value (the default, unless the
rule fails closed) and logs the problem once. Values are read lazily, so
``override_settings`` just works.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import math
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from django.conf import settings
from django.utils.module_loading import import_string

from ._logging import log_once
from ._names import DEFAULT_BUCKETS, DEFAULT_NAMESPACE

logger = logging.getLogger(__name__)

PREFIX: Final = "SENT_OTEL_"

DEFAULT_EXCLUDED_PATHS: Final = (r"^/metrics$",)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNSET: Final[Any] = object()  # no value given
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
_META_KEY = re.compile(r"[A-Z][A-Z0-9_]*")
#: The token an invalid ``METRICS_TOKEN`` is replaced by: nobody knows it, so /metrics fails
#: closed (401) until the setting is fixed.
NOBODY_KNOWS: Final = secrets.token_bytes(32)


class SettingError(ValueError):
    """A setting's value is unusable. ``fallback`` is what the runtime uses instead (the
    default unless given); ``got`` is the offending part, shown by the check (omitted for
    secrets)."""

    def __init__(self, hint: str, *, got: Any = UNSET, fallback: Any = UNSET) -> None:
        super().__init__(hint)
        self.hint, self.got, self.fallback = hint, got, fallback


class PatternError(SettingError):
    """A regular expression that does not compile (its own check id)."""


class Setting(NamedTuple):
    name: str
    default: Any
    parse: Callable[[Any], Any]


def _sequence(value: Any, hint: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SettingError(hint, got=value)
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingError("Use True or False.", got=value)
    return value


# ``^`` + a path without a regular-expression metacharacter + ``$``.
_LITERAL_PATH = re.compile(r"\^([^.^$*+?{}\[\]\\|()]*)\$")


class ExcludedPaths(NamedTuple):
    """``SENT_OTEL_EXCLUDED_PATHS`` as searched on every request: the patterns that match one
    literal path (``^/metrics$``) become a set, the others one regular expression. The
    answers are those of searching each pattern; the common case costs a set lookup."""

    exact: frozenset[str]
    pattern: re.Pattern[str] | None

    def search(self, path: str) -> bool:
        return path in self.exact or (
            self.pattern is not None and self.pattern.search(path) is not None
        )

    def matcher(self) -> Callable[[str], bool]:
        """:meth:`search`, or the set's own ``__contains__`` when every pattern is a literal
        path (the default): one C call per request."""
        return self.exact.__contains__ if self.pattern is None else self.search


def _excluded(value: Any) -> ExcludedPaths | None:
    patterns = _sequence(value, "Use a list of regular expressions, e.g. [r'^/health$'].")
    exact: set[str] = set()
    others: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise SettingError("Every entry must be a string.", got=pattern)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PatternError(f"{pattern!r}: {exc}") from None
        literal = _LITERAL_PATH.fullmatch(pattern)
        if literal is None:
            others.append(pattern)
        else:  # ``$`` also matches just before a final newline
            exact.update((literal[1], literal[1] + "\n"))
    if not patterns:
        return None
    other = re.compile("|".join(f"(?:{p})" for p in others)) if others else None
    return ExcludedPaths(frozenset(exact), other)


def _namespace(value: Any) -> str:
    if not (isinstance(value, str) and (value == "" or _NAME.fullmatch(value))):
        raise SettingError("Use letters, digits and underscores, e.g. 'django'.", got=value)
    return value


def _buckets(value: Any) -> tuple[float, ...]:
    """Finite, positive, strictly increasing upper bounds; a trailing ``+Inf`` is dropped
    (prometheus_client adds it), a lone one is not enough."""
    hint = "Use e.g. [0.05, 0.1, 0.5, 1, 5, 30]."
    bounds = list(_sequence(value, hint))
    if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
        raise SettingError(hint, got=value)
    bounds = [float(b) for b in bounds]
    if bounds and bounds[-1] == math.inf:
        bounds.pop()
    if not bounds or not all(math.isfinite(b) for b in bounds) or bounds[0] <= 0:
        raise SettingError(hint, got=value)
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise SettingError(hint, got=value)
    return tuple(bounds)


def _import(value: Any, name: str) -> Any:
    hint = f"Set {PREFIX}{name} to a dotted path such as 'myproject.monitoring.thing', or None."
    if not isinstance(value, str):
        raise SettingError(hint, got=value)
    try:
        return import_string(value)
    except Exception as exc:  # ImportError, and ValueError/TypeError for ".x" or "..x"
        raise SettingError(f"{hint} Import failed: {exc}", got=value) from None


def _registry(value: Any) -> Any:
    from prometheus_client import REGISTRY, CollectorRegistry

    if value is None:
        return REGISTRY  # looked up now, so a patched default registry is honoured
    registry = _import(value, "METRICS_REGISTRY")
    if not isinstance(registry, CollectorRegistry):
        raise SettingError("It must name a prometheus_client CollectorRegistry.", got=value)
    return registry


def _token(value: Any) -> bytes | None:
    if value is None or value == "":
        return None
    if not (isinstance(value, str) and len(value) >= 16 and _TOKEN.fullmatch(value)):
        raise SettingError(
            "Use a random string of at least 16 URL-safe characters (no whitespace: strip a "
            "token read from a file), or None.",
            fallback=NOBODY_KNOWS,
        )
    return value.encode()


def _networks(value: Any) -> tuple[Network, ...] | None:
    """None: every client may scrape. Not a list: nobody may; invalid entries are skipped."""
    if value is None:
        return None
    hint = "Use a list such as ['127.0.0.0/8', '10.0.0.0/8']."
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SettingError(hint, got=value, fallback=())
    if not value:
        return None
    networks: list[Network] = []
    invalid: list[Any] = []
    for entry in value:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except (TypeError, ValueError):
            invalid.append(entry)
    if invalid:
        hint = "Use CIDR notation such as '10.0.0.0/8'."
        raise SettingError(hint, got=invalid, fallback=tuple(networks))
    return tuple(networks)


def _meta_key(value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and _META_KEY.fullmatch(value)):
        raise SettingError("Use a META key such as 'HTTP_X_FORWARDED_FOR'.", got=value)
    return value


def _provider(value: Any) -> Any:
    """The object named: a provider instance, or a class or factory the tracing sink calls
    (not here: calling a factory in ``manage.py check`` could have side effects)."""
    if value is None:
        return None
    obj = _import(value, "TRACER_PROVIDER")
    has_get_tracer = callable(getattr(obj, "get_tracer", None))
    if not has_get_tracer and (isinstance(obj, type) or not callable(obj)):
        raise SettingError("It must name a tracer provider, its class or a factory.", got=value)
    return obj


#: Every setting, in the README's order.
SETTINGS: Final = (
    Setting("ENABLED", True, _bool),
    Setting("EXCLUDED_PATHS", DEFAULT_EXCLUDED_PATHS, _excluded),
    Setting("METRICS_ENABLED", True, _bool),
    Setting("METRICS_NAMESPACE", DEFAULT_NAMESPACE, _namespace),
    Setting("METRICS_BUCKETS", DEFAULT_BUCKETS, _buckets),
    Setting("METRICS_REGISTRY", None, _registry),
    Setting("METRICS_EXEMPLARS", True, _bool),
    Setting("METRICS_TOKEN", None, _token),
    Setting("METRICS_ALLOWED_NETWORKS", None, _networks),
    Setting("METRICS_CLIENT_IP_HEADER", None, _meta_key),
    Setting("OTEL_METRICS_ENABLED", False, _bool),
    Setting("TRACING_ENABLED", True, _bool),
    Setting("TRACER_PROVIDER", None, _provider),
    Setting("WATCH_DISCONNECTS", False, _bool),
)


def raw(setting: Setting) -> Any:
    """The value in ``django.conf.settings``, or the setting's default."""
    return getattr(settings, PREFIX + setting.name, setting.default)


def parsed(setting: Setting) -> Any:
    """The parsed value; when invalid, the error's fallback (logged once per value)."""
    value = raw(setting)
    try:
        return setting.parse(value)
    except SettingError as exc:
        message = "django-sent-otel: setting %s%s is invalid (see manage.py check): %s"
        key = f"setting {setting.name}={value!r}"
        log_once(logger, message, PREFIX, setting.name, exc.hint, key=key)
        if exc.fallback is not UNSET:
            return exc.fallback
        return setting.parse(setting.default)


class Settings:
    """The parsed ``SENT_OTEL_*`` settings as attributes, one property per table entry."""

    ENABLED: bool
    EXCLUDED_PATHS: ExcludedPaths | None
    METRICS_ENABLED: bool
    METRICS_NAMESPACE: str
    METRICS_BUCKETS: tuple[float, ...]
    METRICS_REGISTRY: Any  # a prometheus_client CollectorRegistry
    METRICS_EXEMPLARS: bool
    METRICS_TOKEN: bytes | None
    METRICS_ALLOWED_NETWORKS: tuple[Network, ...] | None
    METRICS_CLIENT_IP_HEADER: str | None
    OTEL_METRICS_ENABLED: bool
    TRACING_ENABLED: bool
    TRACER_PROVIDER: Any  # a provider, its class or a factory
    WATCH_DISCONNECTS: bool


def _property(setting: Setting) -> property:
    return property(lambda self: parsed(setting), doc=f"{PREFIX}{setting.name}, parsed")


for _setting in SETTINGS:
    setattr(Settings, _setting.name, _property(_setting))

conf = Settings()
