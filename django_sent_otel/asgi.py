"""The ASGI entry point: an outer wrapper that sees the real end of delivery.

Django's ASGI handler skips ``close()`` on several paths and ``send()`` never reports a client
that went away. Wrapped around the application, :class:`DeliveryASGIMiddleware` sees the
final ``http.response.body`` (``more_body=False``), an ``http.disconnect`` before it, exceptions
escaping the application and applications that return without finishing the body. It shares
one tracker per request with :class:`~django_sent_otel.middleware.DeliveryMiddleware`, which
adds the route; on its own it tracks with ``route="unmatched"``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .delivery import CLIENT_DISCONNECT, Tracker, classify, is_bodiless
from .middleware import SCOPE_KEY, route_before_response
from .pipeline import runtime

logger = logging.getLogger("django_sent_otel")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["DeliveryASGIMiddleware", "get_asgi_application"]


class DeliveryASGIMiddleware:
    """Wraps any ASGI application and records one delivery outcome per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracker = _start(scope)
        if tracker is None:
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope[SCOPE_KEY] = tracker

        async def observed_receive() -> Message:
            message = await receive()
            if message.get("type") == "http.disconnect" and not tracker.done:
                route_before_response(tracker)
                tracker.finish(CLIENT_DISCONNECT)
            return message

        async def observed_send(message: Message) -> None:
            kind = message.get("type")
            if kind == "http.response.body":
                body = message.get("body")
                if body:
                    tracker.bytes_sent += len(body)
                await send(message)
                if not message.get("more_body", False):
                    tracker.finish()
                return
            if kind == "http.response.start":
                status = int(message.get("status", 0))
                if tracker.returned_at is None:
                    tracker.handler_returned(route=None, status_code=status)
                else:
                    tracker.status_code = status
                await send(message)
                if is_bodiless(tracker.method, status):
                    tracker.finish()
                return
            await send(message)

        try:
            await self.app(scope, observed_receive, observed_send)
        except BaseException as exc:
            if not tracker.done:
                route_before_response(tracker)
                tracker.finish(classify(exc))
            raise
        if not tracker.done:
            # Returned without the final body message: the response was cut short.
            route_before_response(tracker)
            tracker.finish(CLIENT_DISCONNECT)


def _start(scope: Scope) -> Tracker | None:
    if scope.get("type") != "http":
        return None
    try:
        rt = runtime()
        if not rt.enabled or rt.is_excluded(scope.get("path", "")):
            return None
        tracker = Tracker(scope.get("method", ""), rt.sinks)
        tracker.wrapped = True
        return tracker
    except Exception:
        logger.exception("django-sent-otel: could not start tracking a request")
        return None


def get_asgi_application() -> DeliveryASGIMiddleware:
    """Django's ASGI application wrapped for delivery tracking (a drop-in for asgi.py)."""
    from django.core.asgi import get_asgi_application as django_asgi_application

    return DeliveryASGIMiddleware(django_asgi_application())  # type: ignore[arg-type]
