"""The runtime: the enabled flag, the exclusion pattern and the sinks, in their fixed order.

Built from the parsed settings (:mod:`django_sent_otel.conf`) on first use, and again after a
``SENT_OTEL_*`` setting changes. Each sink module builds its own sink; invalid settings have
already fallen back to their defaults, so building never raises on the request path.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

from .conf import PREFIX, conf
from .delivery import Sink


class Runtime:
    """What the adapters need per request: the sinks, and whether a path is tracked."""

    __slots__ = ("enabled", "excluded", "metrics", "returned_sinks", "sinks")

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
        # A sink whose class sets ``on_return = False`` has nothing to do at handler return.
        self.returned_sinks = tuple(s for s in self.sinks if getattr(s, "on_return", True))
        self.metrics = metrics

    def is_excluded(self, path: str) -> bool:
        return self.excluded is not None and self.excluded.search(path) is not None


def build() -> Runtime:
    from . import metrics, tracing
    from .signals import SignalSink

    # The order is the contract between sinks: tracing publishes ``tracker.span``, which the
    # metrics sink reads for exemplars, so tracing comes first (tests/test_runtime.py holds
    # it); the signal and callbacks come last, once every metric and span is recorded.
    tracing_sink = tracing.build_sink()
    metrics_sink = metrics.build_sink()
    sinks: list[Sink] = [s for s in (tracing_sink, metrics_sink) if s is not None]
    sinks.append(SignalSink())
    return Runtime(
        conf.ENABLED,
        conf.EXCLUDED_PATHS,
        sinks,
        None if metrics_sink is None else metrics_sink.metrics,
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
