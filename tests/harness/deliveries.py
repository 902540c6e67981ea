"""In-process deliveries: what the ``response_delivered`` signal reports during a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django_sent_otel.delivery import Delivery
from django_sent_otel.signals import response_delivered


class Deliveries(list[Delivery]):
    """The deliveries reported so far, in order; ``signals`` keeps each request and response."""

    def __init__(self) -> None:
        super().__init__()
        #: (request, response, delivery) per signal, for tests that check what the signal sends.
        self.signals: list[tuple[Any, Any, Delivery]] = []

    def receiver(
        self, sender: Any, request: Any = None, response: Any = None, **kwargs: Any
    ) -> None:
        delivery: Delivery = kwargs["delivery"]
        self.append(delivery)
        self.signals.append((request, response, delivery))

    def clear(self) -> None:
        super().clear()
        self.signals.clear()

    def only(self) -> Delivery:
        """The one delivery of the test (fails when there are none or several)."""
        assert len(self) == 1, list(self)
        return self[0]


@contextmanager
def recording() -> Iterator[Deliveries]:
    """Connect a :class:`Deliveries` to the signal for the duration of the block."""
    seen = Deliveries()
    response_delivered.connect(seen.receiver, weak=False)
    try:
        yield seen
    finally:
        response_delivered.disconnect(seen.receiver)
