"""The ASGI entry point: an outer wrapper that sees the real end of delivery.

Django's ASGI handler skips ``close()`` on several paths and ``send()`` never reports a client
that went away. Wrapped around the application, :class:`DeliveryASGIMiddleware` sees the
final ``http.response.body`` (``more_body=False``), an ``http.disconnect`` before it, exceptions
escaping the application and applications that return without finishing the body. It shares
one tracker per request with :class:`~django_sent_otel.middleware.DeliveryMiddleware` through
the scope (it decides whether the request is tracked, the middleware adds the route); on its
own it tracks with ``route="unmatched"``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.core.handlers.asgi import get_script_prefix

from ._compat import client_gone_probe
from .delivery import CLIENT_DISCONNECT, SCOPE_KEY, Tracker, classify, is_bodiless
from .pipeline import runtime

logger = logging.getLogger(__name__)

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
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        tracker = _start(scope)
        scope = dict(scope)
        scope[SCOPE_KEY] = tracker  # None: not tracked, the middleware need not decide again
        if tracker is None:
            await self.app(scope, receive, send)
            return

        # True while the final body message is being handed to the server: a server that
        # closes the connection after it (HTTP/1.0, "Connection: close") may report
        # http.disconnect from inside that send(), which is not the client leaving early.
        sending_final = False

        async def observed_receive() -> Message:
            message = await receive()
            if message.get("type") == "http.disconnect" and not sending_final and not tracker.done:
                tracker.finish(CLIENT_DISCONNECT)
            return message

        # Whether the server already knows the client is gone (uvicorn, hypercorn, daphne):
        # it then drops body messages silently, and Django, sending a body from memory
        # without yielding, would not hear of the disconnect before the final message. Read
        # before each body message, it is what makes the bytes true and sees a disconnect
        # no receive() reports in time; nothing waits for one (see the accuracy matrix).
        gone = client_gone_probe(send)

        async def observed_send(message: Message) -> None:
            nonlocal sending_final
            kind = message.get("type")
            if kind == "http.response.body":
                if gone is not None and _dropped(gone, tracker):
                    await send(message)  # the server drops it: not handed over
                    return
                body = message.get("body")
                if body:
                    tracker.add_chunk(len(body))
                if message.get("more_body", False):
                    await send(message)
                    return
                tracker.headers_sent()  # an empty body's first byte is its end
                sending_final = True
                await send(message)
                tracker.finish()
                return
            if kind == "http.response.start":
                status = int(message.get("status", 0))
                tracker.handler_returned(route=None, status_code=status)
                await send(message)
                if is_bodiless(tracker.method, status):
                    tracker.headers_sent()
                    tracker.finish()
                return
            await send(message)

        try:
            await self.app(scope, observed_receive, observed_send)
        except BaseException as exc:
            tracker.finish(classify(exc))
            raise
        # Returned without the final body message: the response was cut short.
        tracker.finish(CLIENT_DISCONNECT)


def _dropped(gone: Callable[[], bool], tracker: Tracker) -> bool:
    """Whether the server reports its client gone: the message will be dropped, and the
    response ends as a disconnect now (if nothing decided it before)."""
    if not gone():
        return False
    if not tracker.done:
        tracker.finish(CLIENT_DISCONNECT)
    return True


def _start(scope: Scope) -> Tracker | None:
    """The tracking decision, made once per request: None for a disabled plugin or an
    excluded path (matched against the ``path_info`` Django will give the request)."""
    try:
        rt = runtime()
        path = scope.get("path", "")
        prefix = get_script_prefix(scope)
        if not rt.enabled or rt.is_excluded(path.removeprefix(prefix) if prefix else path):
            return None
        return Tracker(scope.get("method", ""), rt.sinks, returned_sinks=rt.returned_sinks)
    except Exception:
        logger.exception("django-sent-otel: could not start tracking a request")
        return None


def get_asgi_application() -> DeliveryASGIMiddleware:
    """Django's ASGI application wrapped for delivery tracking (a drop-in for asgi.py)."""
    from django.core.asgi import get_asgi_application as django_asgi_application

    return DeliveryASGIMiddleware(django_asgi_application())  # type: ignore[arg-type]
