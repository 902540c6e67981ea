"""``DeliveryMiddleware``: the Django adapter of the delivery core.

It starts a tracker when the request arrives, marks the moment the handler returned (route,
status), and then observes the end of delivery: under WSGI (and under ASGI without the
wrapper) by hooking ``close()`` on the response instance and wrapping streaming bodies; under
the ASGI wrapper the wrapper sees the end and decides. A ``FileResponse`` body is never
touched, so ``wsgi.file_wrapper``/sendfile stays zero-copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from functools import partial
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import FileResponse, HttpRequest
from django.http.response import HttpResponseBase

from . import pipeline
from ._compat import (
    body_size,
    connection_of,
    current_exception,
    file_to_stream,
    wrap_stream_iterator,
)
from ._logging import log_once
from .delivery import (
    CLIENT_DISCONNECT,
    SCOPE_KEY,
    STREAM_ERROR,
    TRACKER_ATTR,
    Tracker,
    classify,
    is_bodiless,
)
from .watcher import get_watcher, socket_gone

logger = logging.getLogger(__name__)
_UNWATCHABLE = (
    "django-sent-otel: this server does not tell when a client leaves while the view runs "
    "(see the docs' table 'Seen while the view runs'); is_disconnected() answers False and "
    "on_disconnect() callbacks run only if the failure is seen otherwise"
)
_NO_WRAPPER = (
    "django-sent-otel: running under ASGI without the delivery wrapper: client disconnects of "
    "non-streaming responses and exceptions escaping Django are not observable. Use "
    "django_sent_otel.asgi.get_asgi_application() in asgi.py."
)


class _Tracked(Tracker):
    """The middleware's tracker, whose :meth:`close` replaces the response's ``close()``.

    One object per request carries the shared state (:class:`Tracker`) and the adapter's own:
    the response whose ``close`` it replaces, how this kind of body tells its outcome
    (``ending``), and for a streaming body whether its wrapper saw it exhausted or raising.
    The response refers to the tracker and the tracker to the response until the first call,
    which drops the tracker's references: no cycle survives a normal close.
    """

    __slots__ = ("body", "closing", "ending", "exhausted", "failed")
    closing: HttpResponseBase | None
    #: How this kind of body tells its outcome at close(), with the exception in flight if
    #: any; None for a body in memory: the server took it all unless an exception is in
    #: flight (or uWSGI saw the connection reset).
    ending: Callable[[_Tracked, HttpResponseBase], str | None] | None
    exhausted: bool
    failed: bool
    #: A synchronous streaming body's wrapper (:func:`_sync_body`), which counts in its own
    #: locals and hands the counts over when it ends.
    body: Iterator[Any] | None

    def close(self) -> None:
        """The response's ``close()``: decide the outcome, then close the response.

        Installed as a bound method (an instance ``__call__`` costs twice as much to call).
        """
        response = self.closing
        if response is None:
            return
        self.closing = None
        reason = None
        try:
            ending = self.ending
            if ending is None:  # a body in memory (the common case, inline)
                exc = current_exception()
                if exc is not None:
                    reason = classify(exc)
                elif "uwsgi" in sys.modules and _uwsgi_connection_dropped():
                    reason = CLIENT_DISCONNECT
            else:
                reason = ending(self, response)
        except Exception:  # never let accounting break the server's close()
            logger.exception("django-sent-otel: could not classify a delivery")
        try:
            # The class's close(); the instance attribute (this method) stays, and calling it
            # again does nothing: the response no longer refers to a tracker that refers to it.
            type(response).close(response)
        finally:
            self.finish(reason)
            if self.disconnected_at is not None:  # the view and the body are done now
                self.work_stopped()

    # Knowing the client left while the view runs: the server's connection, watched.

    def client_left(self, at: float | None = None) -> bool:
        """Only while the application works: the view runs, or a streaming body is still
        being produced. A client that read a whole body and closed before the server called
        ``close()`` did not leave early (the watcher may see its close first)."""
        if self.returned_at is not None and (
            getattr(self, "ending", None) is not _stream_end or self.exhausted
        ):
            return False
        return super().client_left(at)

    def watch(self) -> bool:
        """Register the request's connection with the process's watcher (once)."""
        if self.unwatch is not None or self.disconnected_at is not None:
            return True
        request = self.request
        if request is None or self.done:
            return False
        if "scope" in request.__dict__:
            # ASGI without the wrapper: Django's listener cancels the request when the
            # client leaves, and the middleware reports it (see __acall__).
            return True
        try:
            source = connection_of(request.META)
            if source is None:
                log_once(logger, _UNWATCHABLE)
                return False
            watcher = get_watcher()
            if isinstance(source, int):
                handle = watcher.add(source, self.client_left)
            else:
                handle = watcher.add_probe(source, self.client_left)
            if handle is None:
                return False
            self.unwatch = partial(watcher.remove, handle)
            if not self._open:  # finished meanwhile (another thread closed the response)
                self._stop_watching()
            return True
        except Exception:
            log_once(logger, "django-sent-otel: could not watch a client", error=True)
            return False

    def check_disconnected(self) -> bool:
        """Gone already, or (when no watcher reports) asked of the connection now."""
        if self.disconnected_at is not None:
            return True
        request = self.request
        if self.unwatch is not None or request is None:
            return False
        try:
            source = connection_of(request.META)
            if isinstance(source, int):
                gone = socket_gone(source)
            else:
                gone = source is not None and bool(source())
        except Exception:
            return False
        if gone:
            self.client_left()
        return gone


# How the other kinds of body tell their outcome at close().


def _bodiless_end(tracker: _Tracked, response: HttpResponseBase) -> str | None:
    return None  # delivered with the headers


def _stream_end(tracker: _Tracked, response: HttpResponseBase) -> str | None:
    """A streaming body: its wrapper noted whether it was exhausted or raised (and, closed
    here if the server stopped iterating, hands over what it counted)."""
    body = tracker.body
    if body is not None:
        tracker.body = None
        # Still running on another thread (ValueError): what it counted so far.
        with contextlib.suppress(ValueError):
            body.close()  # type: ignore[attr-defined]
    if tracker.failed:
        return STREAM_ERROR
    reason = classify(sys.exc_info()[1])
    if reason is None and not tracker.exhausted:
        return CLIENT_DISCONNECT
    return _unless_dropped(reason)


def _file_end(tracker: _Tracked, response: HttpResponseBase) -> str | None:
    """A ``FileResponse`` handed to ``wsgi.file_wrapper`` (sendfile): all of it, or the
    exception in flight."""
    reason = _unless_dropped(classify(sys.exc_info()[1]))
    if reason is not None:
        return reason
    size = _content_length(response)
    if size is not None:
        tracker.add_bytes(size)
    tracker.chunks = 1  # one file handed over whole
    return None


def _iterated_file_end(tracker: _Tracked, response: HttpResponseBase) -> str | None:
    """A ``FileResponse`` the server iterated itself: the file position tells how far it got."""
    reason = classify(sys.exc_info()[1])
    if reason is None and _uwsgi_connection_dropped():
        return CLIENT_DISCONNECT
    size = _content_length(response)
    position = _position(response)
    if reason is None and size is not None and position is not None and position < size:
        tracker.add_bytes(position)
        tracker.chunks = 1
        return CLIENT_DISCONNECT
    sent = size if reason is None and size is not None else position
    if sent is not None:
        tracker.add_bytes(sent)
    tracker.chunks = 1  # one file handed over, however the server read it
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


def _sync_body(iterator: Iterable[Any], tracker: _Tracked, *, raw: bool = False) -> Iterator[Any]:
    """Pass the body through, counting chunks and bytes (the first marks the first byte) and
    noting exhaustion or a raising iterator. ``GeneratorExit`` (the server stopped
    iterating, or :func:`_stream_end` closing it) is not an ``Exception``: it leaves the
    body neither exhausted nor failed.

    The counts live in locals and reach the tracker when the body ends: a method call per
    chunk costs about 0.7k instructions ("plugin-metrics" streaming rows of ``make
    bench-instructions``). ``raw``: the chunks are the view's own, before Django makes bytes
    of them (see ``_compat.wrap_stream_iterator``): a chunk that is not ``bytes`` is counted
    as the bytes Django will make of it.
    """
    chunks = sent = 0
    try:
        for chunk in iterator:
            if not chunks:
                tracker.headers_sent()  # the first chunk is the first byte
            chunks += 1
            sent += len(chunk) if not raw or type(chunk) is bytes else _byte_length(chunk, tracker)
            yield chunk
    except Exception:
        tracker.failed = True
        raise
    else:
        tracker.exhausted = True
    finally:
        tracker.add_body(chunks, sent)


def _watch_sync_body(iterator: Iterable[Any], tracker: _Tracked, *, raw: bool) -> Iterator[Any]:
    body = tracker.body = _sync_body(iterator, tracker, raw=raw)
    return body


def _byte_length(chunk: Any, tracker: _Tracked) -> int:
    """The length of the bytes ``HttpResponseBase.make_bytes`` makes of a chunk. The charset
    is read only here: ``response.charset`` costs about 20k instructions (a settings lookup
    and a regular expression), and views stream bytes."""
    if isinstance(chunk, memoryview):
        return chunk.nbytes
    if isinstance(chunk, (bytes, bytearray)):
        return len(chunk)
    response = tracker.closing
    charset = response.charset if response is not None else "utf-8"
    return len(str(chunk).encode(charset))


async def _async_body(iterator: AsyncIterator[bytes], tracker: _Tracked) -> AsyncIterator[bytes]:
    add_chunk = tracker.add_chunk
    try:
        async for chunk in iterator:
            add_chunk(len(chunk))
            yield chunk
    except asyncio.CancelledError:
        raise  # the server cancelled: a disconnect, not a failing body
    except Exception:
        tracker.failed = True
        raise
    tracker.exhausted = True


def _content_length(response: HttpResponseBase) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _position(response: HttpResponseBase) -> int | None:
    filelike = file_to_stream(response)
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
            # The client left while the view ran (Django's listener saw http.disconnect and
            # cancelled the request): Django sends nothing and closes nothing.
            tracker.client_left()
            tracker.finish(CLIENT_DISCONNECT)
            raise
        _returned(request, response, tracker)
        return response


def _start(request: HttpRequest) -> Tracker | None:
    """The request's tracker: the ASGI wrapper's, or a new one (None when not tracked).

    This and :func:`_returned` run on every request: instance attributes are read through
    ``__dict__`` (a missing one costs no exception), the runtime's fields directly.
    """
    try:
        attrs = request.__dict__
        if "scope" in attrs:
            return _start_in_scope(request, attrs["scope"])
        rt = pipeline.current or pipeline.runtime()
        if not rt.enabled or rt.is_excluded(request.path_info):
            return None
        if rt.url_excluded is not None and rt.is_url_excluded(request):
            return None
        tracker = _Tracked(request.method, rt.sinks, rt.returned_sinks, request)
        attrs[TRACKER_ATTR] = tracker
        if rt.watch_disconnects:
            tracker.watch()
        return tracker
    except Exception:
        logger.exception("django-sent-otel: could not start tracking a request")
        return None


def _start_in_scope(request: HttpRequest, scope: Any) -> Tracker | None:
    """Under ASGI: the wrapper decided and handed its tracker in the scope (it sees the end
    of delivery itself); without the wrapper, the middleware tracks on its own."""
    if SCOPE_KEY in scope:
        tracker: Tracker | None = scope[SCOPE_KEY]
        if tracker is None:
            return None
        rt = pipeline.current or pipeline.runtime()
        if rt.url_excluded is not None and rt.is_url_excluded(request):
            tracker.discard()  # needs the request: decided here
            return None
        tracker.request = request
    else:
        rt = pipeline.runtime()
        if not rt.enabled or rt.is_excluded(request.path_info) or rt.is_url_excluded(request):
            return None
        log_once(logger, _NO_WRAPPER)
        tracker = _Tracked(request.method, rt.sinks, rt.returned_sinks, request)
    request.__dict__[TRACKER_ATTR] = tracker
    return tracker


def _returned(request: HttpRequest, response: HttpResponseBase, tracker: Tracker) -> None:
    try:
        status = response.status_code
        match = request.resolver_match
        route = None if match is None else match.route or "/"
        if not tracker.handler_returned(route, status, response) or type(tracker) is not _Tracked:
            return  # decided or discarded already, or the ASGI wrapper's tracker: it decides
        # (A 200 response is bodiless only for HEAD: the rule is asked for the others only.)
        if (status != 200 or tracker.method == "HEAD") and is_bodiless(tracker.method, status):
            tracker.ending = _bodiless_end
            tracker.first_byte_at = tracker.returned_at  # the headers go with the return
        elif not response.streaming:
            tracker.ending = None
            size = body_size(response)
            if size is None:
                content = getattr(response, "content", b"")
                size = len(content) if isinstance(content, bytes) else 0
            # The whole body goes to the server with the return, as one chunk.
            tracker.bytes_sent = size
            tracker.chunks = 1 if size else 0
            tracker.first_byte_at = tracker.returned_at
        elif isinstance(response, FileResponse) and file_to_stream(response) is not None:
            # The file is the server's to send from now on (never wrapped: sendfile stays).
            tracker.first_byte_at = tracker.returned_at
            if request.META.get("wsgi.file_wrapper") is not None:
                tracker.ending = _file_end
            else:
                tracker.ending = _iterated_file_end
        else:
            tracker.ending = _stream_end
            tracker.exhausted = tracker.failed = False
            tracker.body = None
            if response.is_async:  # type: ignore[attr-defined]
                content = response.streaming_content  # type: ignore[attr-defined]
                response.streaming_content = _async_body(content, tracker)  # type: ignore[attr-defined]
            elif not wrap_stream_iterator(
                response, partial(_watch_sync_body, tracker=tracker, raw=True)
            ):
                content = response.streaming_content  # type: ignore[attr-defined]
                response.streaming_content = _watch_sync_body(content, tracker, raw=False)  # type: ignore[attr-defined]
        tracker.closing = response
        response.close = tracker.close  # type: ignore[method-assign]
        if tracker.unwatch is not None and tracker.ending is not _stream_end:
            tracker._stop_watching()  # the work is done: only the server's sending is left
    except Exception:
        logger.exception("django-sent-otel: could not observe a response")
