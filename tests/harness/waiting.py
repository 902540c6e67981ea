"""Waiting with a deadline: the one polling loop of the tests, benchmarks and example.

A test waits for an event (a record written, a scrape reaching a value, a span arriving), never
for a fixed time. :func:`wait_for` asks ``predicate`` until it returns something truthy and
returns that; at the deadline it raises :class:`AssertionError` naming what it waited for::

    record = wait_for(lambda: find(test_id), 30, what=f"the record of {test_id}")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: How long to sleep between two polls; short, since every wait is bounded anyway.
INTERVAL = 0.05


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    what: str,
    interval: float = INTERVAL,
    details: Callable[[], str] | None = None,
    pause: Callable[[float], object] | None = None,
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return it.

    ``details`` adds context to the failure message (a log tail, the last scrape). ``pause``
    replaces the sleep between polls: ``Condition.wait`` (called with the lock held) wakes the
    loop as soon as another thread notifies, ``Event.wait`` lets a signal cut it short.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            message = f"timed out after {timeout:g}s waiting for {what}"
            if details is not None:
                message += f"\n{details()}"
            raise AssertionError(message)
        (pause or time.sleep)(min(interval, remaining))
