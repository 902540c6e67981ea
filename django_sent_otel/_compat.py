"""Every use of a dependency's private detail, each for a measured saving on every request.

``tests/test_compat.py`` fails loudly when one of them changes shape; each function has a
public fallback so a change costs speed, never correctness.
"""

from __future__ import annotations

from typing import Any, Final

from opentelemetry import trace

#: ``tuple.__new__(cls, values)`` builds a named tuple from a tuple without its keyword
#: ``__new__``: a third of the cost of ``Delivery(...)`` ("plugin-*" rows of
#: ``make bench-instructions``).
new_tuple: Final = tuple.__new__

UNKNOWN: Final[Any] = object()


def tracer_provider_set() -> Any:
    """The provider set in code with ``trace.set_tracer_provider()``, None when none was set,
    or :data:`UNKNOWN`. opentelemetry-api keeps it in ``trace._TRACER_PROVIDER``; reading it
    spares the "plugin-noop" row the environment lookup of ``trace.get_tracer_provider()``."""
    return getattr(trace, "_TRACER_PROVIDER", UNKNOWN)


def body_parts(response: Any) -> list[bytes] | None:
    """The parts of an ``HttpResponse`` body (Django's ``_container``), or None. Summing their
    lengths spares the copy that ``response.content`` makes by joining them ("plugin-metrics"
    row with a multi-part body)."""
    container = response.__dict__.get("_container")
    return container if type(container) is list else None
