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

from ._compat import body_parts
from .delivery import (
    CLIENT_DISCONNECT,
    SCOPE_KEY,
    STREAM_ERROR,
    TRACKER_ATTR,
    UNTRACKED_ATTR,
    Tracker,
    classify,
    is_bodiless,
    log_once,
    route_of,
)
from .pipeline import runtime

logger = logging.getLogger(__name__)
_NO_WRAPPER = (
    "django-sent-otel: running under ASGI without the delivery wrapper: client disconnects of "
    "non-streaming responses and exceptions escaping Django are not observable. Use "
    "django_sent_otel.asgi.get_asgi_application() in asgi.py."
)


class _CloseHook:
    """Replaces ``response.close`` on the instance; decides the outcome when the server closes.

    The response refers to the hook and the hook to the response until the first call, which
    removes the instance attribute and drops its reference: no cycle survives a normal close.
    Subclasses say how a kind of body tells its outcome and size.
    """

    __slots__ = ("response", "tracker")

    def __init__(self, tracker: Tracker, response: HttpResponseBase) -> None:
        self.tracker = tracker
        self.response: HttpResponseBase | None = response

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
        """A body in memory: the server took it all unless an exception is in flight (or
        uWSGI saw the connection reset)."""
        return _unless_dropped(classify(sys.exc_info()[1]))


class _BodilessClose(_CloseHook):
    __slots__ = ()

    def _reason(self, response: HttpResponseBase, tracker: Tracker) -> str | None:
        return None  # delivered with the headers


class _StreamClose(_CloseHook):
    """A streaming body: its wrapper notes whether it was exhausted or raised."""

    __slots__ = ("exhausted", "failed")

    def __init__(self, tracker: Tracker, response: HttpResponseBase) -> None:
        super().__init__(tracker, response)
        self.exhausted = self.failed = False

    def _reason(self, response: HttpResponseBase, tracker: Tracker) -> str | None:
        if self.failed:
            return STREAM_ERROR
        reason = classify(sys.exc_info()[1])
        if reason is None and not self.exhausted:
            return CLIENT_DISCONNECT
        return _unless_dropped(reason)


class _FileClose(_CloseHook):
    """A ``FileResponse`` handed to ``wsgi.file_wrapper`` (sendfile): all of it, or the
    exception in flight."""

    __slots__ = ()

    def _reason(self, response: HttpResponseBase, tracker: Tracker) -> str | None:
        reason = _unless_dropped(classify(sys.exc_info()[1]))
        if reason is not None:
            return reason
        size = _content_length(response)
        if size is not None:
            tracker.add_bytes(size)
        return None


class _IteratedFileClose(_CloseHook):
    """A ``FileResponse`` the server iterated itself: the file position tells how far it got."""

    __slots__ = ()

    def _reason(self, response: HttpResponseBase, tracker: Tracker) -> str | None:
        reason = classify(sys.exc_info()[1])
        if reason is None and _uwsgi_connection_dropped():
            return CLIENT_DISCONNECT
        size = _content_length(response)
        position = _position(response)
        if reason is None and size is not None and position is not None and position < size:
            tracker.add_bytes(position)
            return CLIENT_DISCONNECT
        sent = size if reason is None and size is not None else position
        if sent is not None:
            tracker.add_bytes(sent)
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


def _unless_dropped(reason: str | None) -> str | None:
    """``reason``, or a disconnect when none is known but uWSGI saw the connection reset."""
    if reason is None and _uwsgi_connection_dropped():
        return CLIENT_DISCONNECT
    return reason


def _sync_body(iterator: Iterable[bytes], tracker: Tracker, hook: _StreamClose) -> Iterator[bytes]:
    """Pass the body through, counting bytes and noting exhaustion or a raising iterator."""
    it = iter(iterator)
    add_bytes = tracker.add_bytes
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            hook.exhausted = True
            return
        except Exception:
            hook.failed = True
            raise
        add_bytes(len(chunk))
        yield chunk


async def _async_body(
    iterator: AsyncIterator[bytes], tracker: Tracker, hook: _StreamClose
) -> AsyncIterator[bytes]:
    it = aiter(iterator)
    add_bytes = tracker.add_bytes
    while True:
        try:
            chunk = await anext(it)
        except StopAsyncIteration:
            hook.exhausted = True
            return
        except asyncio.CancelledError:
            raise  # the server cancelled: a disconnect, not a failing body
        except Exception:
            hook.failed = True
            raise
        add_bytes(len(chunk))
        yield chunk


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
            tracker.finish(CLIENT_DISCONNECT)
            raise
        _returned(request, response, tracker)
        return response


def _start(request: HttpRequest) -> Tracker | None:
    try:
        # Instance attributes read through __dict__: a missing attribute costs no exception.
        scope = request.__dict__.get("scope")
        if scope is not None and SCOPE_KEY in scope:
            tracker: Tracker | None = scope[SCOPE_KEY]  # the ASGI wrapper decided
            if tracker is None:
                return None
            if runtime().is_url_excluded(request):  # needs the request: decided here
                tracker.discard()
                return None
            tracker.request = request
        else:
            rt = runtime()
            if not rt.enabled or rt.is_excluded(request.path_info) or rt.is_url_excluded(request):
                return None
            if scope is not None:
                log_once(logger, _NO_WRAPPER)
            tracker = Tracker(
                request.method or "", rt.sinks, request=request, returned_sinks=rt.returned_sinks
            )
        setattr(request, TRACKER_ATTR, tracker)
        return tracker
    except Exception:
        logger.exception("django-sent-otel: could not start tracking a request")
        return None


def _returned(request: HttpRequest, response: HttpResponseBase, tracker: Tracker) -> None:
    try:
        if request.__dict__.get(UNTRACKED_ATTR):
            tracker.discard()
            return
        status = response.status_code
        tracker.handler_returned(route=route_of(request), status_code=status, response=response)
        scope = request.__dict__.get("scope")
        if tracker.done or (scope is not None and scope.get(SCOPE_KEY) is tracker):
            return  # the ASGI wrapper decides the outcome
        hook: _CloseHook
        if is_bodiless(tracker.method, status):
            hook = _BodilessClose(tracker, response)
        elif isinstance(response, FileResponse) and response.file_to_stream is not None:
            if request.META.get("wsgi.file_wrapper") is not None:
                hook = _FileClose(tracker, response)
            else:
                hook = _IteratedFileClose(tracker, response)
        elif response.streaming:
            hook = stream = _StreamClose(tracker, response)
            content = response.streaming_content  # type: ignore[attr-defined]
            if response.is_async:  # type: ignore[attr-defined]
                response.streaming_content = _async_body(content, tracker, stream)  # type: ignore[attr-defined]
            else:
                response.streaming_content = _sync_body(content, tracker, stream)  # type: ignore[attr-defined]
        else:
            hook = _CloseHook(tracker, response)
            parts = body_parts(response)
            if parts is not None:
                tracker.add_bytes(sum(map(len, parts)))
            else:
                content = getattr(response, "content", b"")
                tracker.add_bytes(len(content) if isinstance(content, bytes) else 0)
        response.close = hook  # type: ignore[method-assign]
    except Exception:
        logger.exception("django-sent-otel: could not observe a response")
