"""Every use of a dependency's private detail, each for a measured saving on every request.

``tests/test_compat.py`` fails loudly when one of them changes shape; each function has a
public fallback so a change costs speed, never correctness.
"""

from __future__ import annotations

import sys
from typing import Any, Final

from opentelemetry import trace

#: ``tuple.__new__(cls, values)`` builds a named tuple from a tuple without its keyword
#: ``__new__``: a third of the cost of ``Delivery(...)`` ("plugin-*" rows of
#: ``make bench-instructions``).
new_tuple: Final = tuple.__new__

UNKNOWN: Final[Any] = object()


def _exc_info_exception() -> BaseException | None:
    return sys.exc_info()[1]


#: The exception being handled, or None: ``sys.exception()`` (Python 3.11+, no tuple built)
#: or its older spelling.
current_exception: Final = getattr(sys, "exception", _exc_info_exception)


def tracer_provider_set() -> Any:
    """The provider set in code with ``trace.set_tracer_provider()``, None when none was set,
    or :data:`UNKNOWN`. opentelemetry-api keeps it in ``trace._TRACER_PROVIDER``; reading it
    spares the "plugin-noop" row the environment lookup of ``trace.get_tracer_provider()``."""
    return getattr(trace, "_TRACER_PROVIDER", UNKNOWN)


def body_size(response: Any) -> int | None:
    """The length of an ``HttpResponse`` body from its parts (Django's ``_container``), or
    None. Summing their lengths spares the copy that ``response.content`` makes by joining
    them ("plugin-metrics" row with a multi-part body)."""
    try:
        container = response._container
        return len(container[0]) if len(container) == 1 else sum(map(len, container))
    except (AttributeError, TypeError, KeyError):  # not a list of bytes
        return None


_SPAN_KEY: Final[str | None] = getattr(trace.propagation, "_SPAN_KEY", None)


def span_in(context: Any) -> Any:
    """The span a context holds, or None. opentelemetry-api keeps it under
    ``trace.propagation._SPAN_KEY`` of the context (a mapping); reading it spares the two
    calls of ``trace.get_current_span(context)`` on every request with tracing ("plugin-sdk"
    row)."""
    if _SPAN_KEY is None:
        span = trace.get_current_span(context)
        return None if span is trace.INVALID_SPAN else span
    return context.get(_SPAN_KEY)
