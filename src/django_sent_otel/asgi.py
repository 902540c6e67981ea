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

        # [0]: True while the final body message is being handed to the server: a server that
        # closes the connection after it (HTTP/1.0, "Connection: close") may report
        # http.disconnect from inside that send(), which is not the client leaving early.
        sending_final = [False]

        async def observed_receive() -> Message:
            message = await receive()
            if message.get("type") == "http.disconnect" and not sending_final[0]:
                # Django's listener reads receive() while the view runs (sync views too, in
                # their thread): the moment is known here, callbacks run on the event loop.
                _left(tracker)
            return message

        # Whether the server already knows the client is gone (uvicorn, hypercorn, daphne):
        # it then drops body messages silently, and Django, sending a body from memory
        # without yielding, would not hear of the disconnect before the final message. Read
        # before each body message, it is what makes the bytes true and sees a disconnect
        # no receive() reports in time; nothing waits for one (see the accuracy matrix).
        gone = client_gone_probe(send)

        def observed_send(message: Message) -> Awaitable[None]:
            # A body message with more to come (only those carry a true ``more_body``), the
            # hot path of a stream, is handled by this plain function, which hands back the
            # server's own awaitable (a coroutine of ours around every chunk costs about 0.9k
            # instructions more) and counts on the tracker inline, in as few steps as it can:
            # each costs 0.1k-0.3k instructions per chunk (``python -m benchmarks.chunk``);
            # the probe is called here, not through a helper (a Python call per chunk less).
            # Like a WSGI iteration, every body message counts as a chunk and the first marks
            # the first byte. Counting after the outcome was decided is harmless: the sinks
            # read the tracker when it is decided.
            if message.get("more_body"):
                if gone is not None and gone():
                    _left(tracker)  # the server drops the message: not handed over
                else:
                    if tracker.first_byte_at is None:
                        tracker.headers_sent()
                    tracker.chunks += 1
                    try:  # noqa: SIM105 (contextlib.suppress: a context manager per chunk)
                        tracker.bytes_sent += len(message["body"])
                    except KeyError:
                        pass  # a body message may leave its body out
                return send(message)
            if message.get("type") == "http.response.body":
                return _send_final(send, message, tracker, gone, sending_final)
            return _send_other(send, message, tracker)

        try:
            await self.app(scope, observed_receive, observed_send)
        except BaseException as exc:
            tracker.finish(classify(exc))
            raise
        finally:
            # The application stopped working on the request (a sync view Django could not
            # cancel returns only now): the work after the client left is counted once.
            if tracker.disconnected_at is not None:
                tracker.work_stopped()
        # Returned without the final body message: the response was cut short.
        tracker.finish(CLIENT_DISCONNECT)


async def _send_final(
    send: Send,
    message: Message,
    tracker: Tracker,
    gone: Callable[[], bool] | None,
    sending_final: list[bool],
) -> None:
    """The final body message: the end of delivery once the server took it."""
    if gone is not None and gone():
        _left(tracker)
        await send(message)  # the server drops it: not handed over
        return
    body = message.get("body")
    if body:
        tracker.add_chunk(len(body))
    elif tracker.first_byte_at is None:
        tracker.headers_sent()  # an empty body's first byte is its end
    sending_final[0] = True
    await send(message)
    tracker.finish()


def _send_other(send: Send, message: Message, tracker: Tracker) -> Awaitable[None]:
    """The response's start (the status the server got) and anything else, handed back as
    the server's own awaitable: no coroutine of ours unless the response is bodiless."""
    if message.get("type") == "http.response.start":
        status = int(message.get("status", 0))
        tracker.handler_returned(route=None, status_code=status)
        # (A 200 response is bodiless only for HEAD: the rule is asked for the others.)
        if (status != 200 or tracker.method == "HEAD") and is_bodiless(tracker.method, status):
            return _send_bodiless(send, message, tracker)
    return send(message)


async def _send_bodiless(send: Send, message: Message, tracker: Tracker) -> None:
    """The start of a bodiless response: delivered once the server took the headers."""
    await send(message)
    tracker.headers_sent()
    tracker.finish()


def _left(tracker: Tracker) -> None:
    """The client is gone (the server reports it, or ``http.disconnect`` arrived): the
    response ends as a disconnect now, if nothing decided it before."""
    if not tracker.done:
        tracker.client_left()
        tracker.finish(CLIENT_DISCONNECT)


def _start(scope: Scope) -> Tracker | None:
    """The tracking decision, made once per request: None for a disabled plugin or an
    excluded path (matched against the ``path_info`` Django will give the request)."""
    try:
        rt = runtime()
        path = scope.get("path", "")
        # Django's get_script_prefix(scope), with the setting read when the runtime was
        # built: a read of Django's settings costs about 3.6k instructions per request
        # (tests/test_asgi.py holds the two equal).
        prefix = rt.script_name or scope.get("root_path", "")
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
