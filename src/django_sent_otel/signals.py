"""Run user code after delivery: the ``response_delivered`` signal and per-request callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.dispatch import Signal

from ._compat import has_receivers
from .delivery import Delivery, Tracker, run_callbacks


class _DeliverySignal(Signal):
    """A signal that tells whoever asked (:func:`on_receivers_changed`) when its receivers
    change, so that the signal sink is in the pipeline only while someone listens: an unheard
    signal costs a request nothing."""

    def connect(self, *args: Any, **kwargs: Any) -> None:
        super().connect(*args, **kwargs)
        _receivers_changed()

    def disconnect(self, *args: Any, **kwargs: Any) -> bool:
        removed = super().disconnect(*args, **kwargs)
        _receivers_changed()
        return removed


_listeners: list[Callable[[], object]] = []


def on_receivers_changed(hook: Callable[[], object]) -> None:
    """Call ``hook()`` whenever a receiver of :data:`response_delivered` is connected or
    disconnected (the pipeline registers its reset: it decides whether the sink runs)."""
    if hook not in _listeners:
        _listeners.append(hook)


def _receivers_changed() -> None:
    for hook in _listeners:
        hook()


#: Sent once per tracked response after its delivery ended, delivered or not, with the
#: keyword arguments ``request``, ``response`` (``None`` when no response was produced, or
#: under the ASGI wrapper without the middleware) and ``delivery``. The sender is
#: :class:`~django_sent_otel.delivery.Delivery`. Exceptions in receivers are logged by
#: ``send_robust`` and never reach the server or the client. A receiver connected while a
#: response is being sent is sent the responses tracked after it.
response_delivered = _DeliverySignal()

# Tasks of deliveries finished on an event loop, kept referenced until they complete.
_pending: set[asyncio.Task[None]] = set()


def _run(
    request: Any,
    response: Any,
    delivery: Delivery,
    callbacks: Sequence[Callable[[Delivery], object]] | None,
) -> None:
    if has_receivers(response_delivered, Delivery):
        response_delivered.send_robust(
            sender=Delivery, request=request, response=response, delivery=delivery
        )
    if callbacks:
        run_callbacks(callbacks, delivery)


async def _arun(
    request: Any,
    response: Any,
    delivery: Delivery,
    callbacks: Sequence[Callable[[Delivery], object]] | None,
) -> None:
    if has_receivers(response_delivered, Delivery):
        await response_delivered.asend_robust(
            sender=Delivery, request=request, response=response, delivery=delivery
        )
    if callbacks:
        await sync_to_async(run_callbacks, thread_sensitive=False)(callbacks, delivery)


class SignalSink:
    """Sends the signal and runs the request's callbacks after delivery.

    In the pipeline while the signal has receivers (:func:`has_work`), and added to one
    request's sinks by ``on_delivered()``. On a thread without an event loop (WSGI, or close()
    under ASGI) they run right there, after the server took the body. On an event loop (the
    ASGI wrapper) they run in a task so that a slow receiver never blocks other connections;
    sync receivers and callbacks go to a thread.
    """

    __slots__ = ()
    on_return = False

    def handler_returned(self, tracker: Tracker) -> None:
        return None

    def finished(self, tracker: Tracker) -> None:
        callbacks = tracker.callbacks
        if not callbacks and not has_receivers(response_delivered, Delivery):
            return
        delivery = tracker.delivery
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            # Outside the except block: a receiver's traceback is not chained to this one.
            _run(tracker.request, tracker.response, delivery, callbacks)
            return
        task = loop.create_task(_arun(tracker.request, tracker.response, delivery, callbacks))
        _pending.add(task)
        task.add_done_callback(_pending.discard)


#: The one signal sink (it keeps no state).
SIGNAL_SINK = SignalSink()


def has_work() -> bool:
    """Whether the signal has receivers: the runtime then includes :data:`SIGNAL_SINK`."""
    return has_receivers(response_delivered, Delivery)
