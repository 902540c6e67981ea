"""``DeliveryMiddleware``: the Django adapter of the delivery core.

It starts a tracker when the request arrives, marks the moment the handler returned (route,
status), and then observes the end of delivery: under WSGI (and under ASGI without the
wrapper) by hooking ``close()`` on the response instance and wrapping streaming bodies; under
the ASGI wrapper the wrapper sees the end and decides. A ``FileResponse`` body is never
touched, so ``wsgi.file_wrapper``/sendfile stays zero-copy.
"""

from __future__ import annotations

import asyncio
import logging
import select
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import FileResponse, HttpRequest
from django.http.response import HttpResponseBase

from . import TRACKER_ATTR
from .delivery import CLIENT_DISCONNECT, STREAM_ERROR, Tracker, classify, is_bodiless
from .pipeline import runtime

logger = logging.getLogger("django_sent_otel")

#: Key under which the ASGI wrapper hands its tracker to the middleware in the scope.
SCOPE_KEY = "django_sent_otel.tracker"
#: A view (such as /metrics) sets this attribute on the request to stay untracked.
UNTRACKED_ATTR = "_sent_otel_untracked"

_PLAIN, _STREAM, _FILE, _FILE_WRAPPER, _BODILESS = range(5)
_warned_no_wrapper = False


def _warn_no_wrapper() -> None:
    global _warned_no_wrapper
    if not _warned_no_wrapper:
        _warned_no_wrapper = True
        logger.warning(
            "django-sent-otel: running under ASGI without the delivery wrapper: client "
            "disconnects of non-streaming responses and exceptions escaping Django are not "
            "observable. Use django_sent_otel.asgi.get_asgi_application() in asgi.py."
        )


def _sync_body(iterator: Iterable[bytes], tracker: Tracker) -> Iterator[bytes]:
    """Pass the body through, counting bytes and noting exhaustion or a raising iterator."""
    it = iter(iterator)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            tracker.exhausted = True
            return
        except Exception:
            tracker.stream_failed = True
            raise
        tracker.bytes_sent += len(chunk)
        yield chunk


async def _async_body(iterator: AsyncIterator[bytes], tracker: Tracker) -> AsyncIterator[bytes]:
    it = aiter(iterator)
    while True:
        try:
            chunk = await anext(it)
        except StopAsyncIteration:
            tracker.exhausted = True
            return
        except asyncio.CancelledError:
            raise  # the server cancelled: a disconnect, not a failing body
        except Exception:
            tracker.stream_failed = True
            raise
        tracker.bytes_sent += len(chunk)
        yield chunk


class _CloseHook:
    """Replaces ``response.close`` on the instance; decides the outcome when the server closes.

    The response refers to the hook and the hook to the response until the first call, which
    removes the instance attribute and drops its reference: no cycle survives a normal close.
    """

    __slots__ = ("mode", "response", "tracker")

    def __init__(self, tracker: Tracker, response: HttpResponseBase, mode: int) -> None:
        self.tracker = tracker
        self.response: HttpResponseBase | None = response
        self.mode = mode

    def __call__(self) -> None:
        response = self.response
        if response is None:
            return
        self.response = None
        tracker = self.tracker
        reason = None
        try:
            reason = self._reason(response, tracker)
        except Exception:  # never let accounting break the server's close()
            logger.exception("django-sent-otel: could not classify a delivery")
        response.__dict__.pop("close", None)
        try:
            response.close()
        finally:
            tracker.finish(reason)

    def _reason(self, response: HttpResponseBase, tracker: Tracker) -> str | None:
        mode = self.mode
        if mode == _BODILESS:
            return None
        reason = classify(sys.exc_info()[1])
        if mode == _STREAM:
            if tracker.stream_failed:
                return STREAM_ERROR
            if reason is None and not tracker.exhausted:
                return CLIENT_DISCONNECT
        if reason is None and _uwsgi_connection_dropped():
            return CLIENT_DISCONNECT
        if mode in (_FILE, _FILE_WRAPPER):
            size = _content_length(response)
            if mode == _FILE:
                # Iterated by the server (no sendfile): the file position tells how far it got.
                position = _position(response)
                if position is not None:
                    tracker.bytes_sent = position
                    if reason is None and size is not None and position < size:
                        return CLIENT_DISCONNECT
            if reason is None and size is not None:
                tracker.bytes_sent = size
        return reason


_HANGUP = select.POLLHUP | select.POLLERR if hasattr(select, "poll") else 0


def _uwsgi_connection_dropped() -> bool:
    """Under uWSGI: whether the client's connection was reset while the server wrote the body.

    uWSGI logs a failed write itself and never raises it into the application, so its close()
    carries no exception. The request's socket still tells: after a reset the kernel reports
    POLLHUP (or POLLERR) on it; a client that read everything and closed only half-closes
    (POLLRDHUP), which is not a hang-up. Outside uWSGI the ``uwsgi`` module does not exist.
    """
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None or not _HANGUP:
        return False
    try:
        poller = select.poll()
        poller.register(uwsgi.connection_fd(), _HANGUP)
        return any(events & _HANGUP for _, events in poller.poll(0))
    except Exception:  # not inside a request, or an older uWSGI without connection_fd()
        return False


def _content_length(response: HttpResponseBase) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _position(response: HttpResponseBase) -> int | None:
    filelike = getattr(response, "file_to_stream", None)
    try:
        if filelike is None or filelike.closed:
            return None
        return int(filelike.tell())
    except Exception:
        return None


class DeliveryMiddleware:
    """Tracks every response until it was delivered (put it first in ``MIDDLEWARE``)."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        tracker = _start(request)
        response: HttpResponseBase = self.get_response(request)  # type: ignore[assignment]
        if tracker is not None:
            _returned(request, response, tracker)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        tracker = _start(request)
        if tracker is None:
            return await self.get_response(request)  # type: ignore[no-any-return,misc]
        try:
            response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
        except asyncio.CancelledError:
            # The client left while the view ran: Django sends nothing and closes nothing.
            route_before_response(tracker)
            tracker.finish(CLIENT_DISCONNECT)
            raise
        _returned(request, response, tracker)
        return response


def _start(request: HttpRequest) -> Tracker | None:
    try:
        rt = runtime()
        # Instance attributes read through __dict__: a missing attribute costs no exception.
        scope = request.__dict__.get("scope")
        outer: Tracker | None = None if scope is None else scope.get(SCOPE_KEY)
        if not rt.enabled or rt.is_excluded(request.path_info):
            if outer is not None:
                outer.discard()
            return None
        if outer is not None:
            outer.request = request
            tracker = outer
        else:
            if scope is not None:
                _warn_no_wrapper()
            tracker = Tracker(
                request.method or "", rt.sinks, request=request, returned_sinks=rt.returned_sinks
            )
        setattr(request, TRACKER_ATTR, tracker)
        return tracker
    except Exception:
        logger.exception("django-sent-otel: could not start tracking a request")
        return None


def route_before_response(tracker: Tracker) -> None:
    """Take the route from the request when delivery ends before the handler returned.

    URL resolution happens before the view runs, so a client that leaves while the view
    still runs is counted under the view's route, not ``unmatched``.
    """
    request = tracker.request
    if request is not None and tracker.returned_at is None:
        match = getattr(request, "resolver_match", None)
        if match is not None:
            tracker.route = match.route or "/"


def _returned(request: HttpRequest, response: HttpResponseBase, tracker: Tracker) -> None:
    try:
        if request.__dict__.get(UNTRACKED_ATTR):
            tracker.discard()
            return
        status = response.status_code
        match = request.resolver_match
        tracker.handler_returned(
            route=None if match is None else match.route or "/",
            status_code=status,
            response=response,
        )
        if tracker.wrapped or tracker.done:
            return  # the ASGI wrapper decides the outcome
        if is_bodiless(tracker.method, status):
            mode = _BODILESS
        elif isinstance(response, FileResponse) and response.file_to_stream is not None:
            uses_wrapper = request.META.get("wsgi.file_wrapper") is not None
            mode = _FILE_WRAPPER if uses_wrapper else _FILE
        elif response.streaming:
            mode = _STREAM
            content = response.streaming_content  # type: ignore[attr-defined]
            if response.is_async:  # type: ignore[attr-defined]
                response.streaming_content = _async_body(content, tracker)  # type: ignore[attr-defined]
            else:
                response.streaming_content = _sync_body(content, tracker)  # type: ignore[attr-defined]
        else:
            mode = _PLAIN
            container = response.__dict__.get("_container")
            if type(container) is list:
                # The body's parts, summed: ``.content`` would join (copy) them.
                tracker.bytes_sent = sum(map(len, container))
            else:
                content = getattr(response, "content", b"")
                tracker.bytes_sent = len(content) if isinstance(content, bytes) else 0
        response.close = _CloseHook(tracker, response, mode)  # type: ignore[method-assign]
    except Exception:
        logger.exception("django-sent-otel: could not observe a response")
