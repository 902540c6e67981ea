"""django-sent-otel: know when a Django response was really delivered.

The public API is what ``__all__`` names: :func:`on_delivered`, the
:data:`response_delivered` signal and the :class:`Delivery` value; :func:`is_disconnected` and
:func:`on_disconnect` (the client left while the work runs), plus ``__version__``. The
setup paths (``django_sent_otel.middleware.DeliveryMiddleware``, ``django_sent_otel.asgi``,
``django_sent_otel.urls``, ``django_sent_otel.gunicorn``) are documented in their modules.
Every other module and name is internal and may change in any release.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ._logging import log_once
from ._version import __version__
from .delivery import TRACKER_ATTR, Delivery
from .signals import SIGNAL_SINK, response_delivered

__all__ = [
    "Delivery",
    "__version__",
    "is_disconnected",
    "on_delivered",
    "on_disconnect",
    "response_delivered",
]

_logger = logging.getLogger("django_sent_otel")


def on_delivered(request: Any, callback: Callable[[Delivery], object]) -> bool:
    """Run ``callback(delivery)`` after this request's response was delivered (or failed).

    Callbacks run in registration order, once delivery ended; an exception in one is logged
    with its traceback and never reaches the server or the client. Returns False (and logs a
    warning once) when the request is not tracked (plugin disabled, excluded path, middleware
    missing) or its delivery already ended: the callback will then not run.
    """
    if not callable(callback):
        raise TypeError(f"on_delivered() needs a callable, got {type(callback).__name__}")
    tracker = getattr(request, TRACKER_ATTR, None)
    if tracker is None or tracker.done:
        log_once(
            _logger,
            "django-sent-otel: on_delivered() called for a request that is not tracked "
            "(disabled, excluded path, DeliveryMiddleware missing, or delivery already "
            "ended); the callback will not run",
        )
        return False
    if tracker.callbacks is None:
        tracker.callbacks = [callback]
        if SIGNAL_SINK not in tracker.sinks:  # no receivers: the sink runs for this request
            tracker.sinks = (*tracker.sinks, SIGNAL_SINK)
    else:
        tracker.callbacks.append(callback)
    return True


def is_disconnected(request: Any) -> bool:
    """Whether this request's client is known to have left. Never blocks.

    Cheap enough between two rows or two tokens, from a sync or async view and from a
    streaming generator (sync or async) that captured the request: an attribute read when the
    client is watched (``on_disconnect()`` registered, ``SENT_OTEL_WATCH_DISCONNECTS``, or the
    ASGI wrapper, which sees ``http.disconnect``), else one non-blocking look at the
    connection. False when the request is not tracked or the server cannot tell (the docs'
    table "Seen while the view runs").
    """
    tracker = getattr(request, TRACKER_ATTR, None)
    if tracker is None:
        return False
    if tracker.disconnected_at is not None:
        return True
    return bool(tracker.check_disconnected())


def on_disconnect(request: Any, callback: Callable[[], object]) -> bool:
    """Run ``callback()`` once, as soon as this request's client is known gone, while the
    request is still in progress; never after its response was delivered.

    Under WSGI it runs on the plugin's watcher thread, under the ASGI wrapper on the event
    loop: keep it short and thread-safe (``sqlite3.Connection.interrupt``, psycopg's
    ``cancel()``, closing an upstream client, ``loop.call_soon_threadsafe(task.cancel)``).
    Registered after the client left, it runs at once in the caller. An exception in it is
    logged once and never reaches the server or the client. Returns False (and logs a
    warning once) when it will never run: the request is not tracked, its response was
    delivered, or the server cannot tell that a client left.
    """
    if not callable(callback):
        raise TypeError(f"on_disconnect() needs a callable, got {type(callback).__name__}")
    tracker = getattr(request, TRACKER_ATTR, None)
    if tracker is None or not tracker.add_leave_callback(callback) or not tracker.watch():
        log_once(
            _logger,
            "django-sent-otel: on_disconnect() called for a request that is not tracked, "
            "already delivered, or served by a server that cannot tell that its client "
            "left; the callback will not run",
        )
        return False
    return True
