"""django-sent-otel: know when a Django response was really delivered.

The public API is what ``__all__`` names: :func:`on_delivered`, the
:data:`response_delivered` signal and the :class:`Delivery` value, plus ``__version__``. The
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

__all__ = ["Delivery", "__version__", "on_delivered", "response_delivered"]

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
