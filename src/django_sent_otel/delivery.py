"""The delivery core: one state machine per response, deciding its outcome exactly once.

Adapters (the Django middleware, the ASGI wrapper) tell a :class:`Tracker` what they observe;
the tracker turns that into one immutable :class:`Delivery` and hands it to the sinks (metrics,
tracing, signal and callbacks) in a fixed order. Nothing here imports Django.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any, Final, NamedTuple, Protocol

from ._compat import new_tuple, real_lock
from ._logging import log_once
from ._names import OTHER, UNMATCHED

logger = logging.getLogger(__name__)

#: The request attribute holding its tracker (read by ``on_delivered``).
TRACKER_ATTR: Final = "_sent_otel_tracker"
#: The scope key under which the ASGI wrapper hands the middleware its decision: the tracker,
#: or None when the request is not tracked (disabled, excluded path).
SCOPE_KEY: Final = "django_sent_otel.tracker"

DELIVERED: Final = "delivered"
CLIENT_DISCONNECT: Final = "client_disconnect"
STREAM_ERROR: Final = "stream_error"
REASONS: Final = (CLIENT_DISCONNECT, STREAM_ERROR)

METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

_DISCONNECT_ERRNOS: Final = frozenset(
    {errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ESHUTDOWN, errno.ENOTCONN}
)
# Servers' own "the client went away" exceptions, matched by name so no server is imported:
# waitress raises ClientDisconnected, Starlette-style stacks ClientDisconnect.
_DISCONNECT_NAMES: Final = frozenset({"ClientDisconnected", "ClientDisconnect"})


def normalize_method(method: str | None) -> str:
    """The request method, uppercased as Django does, if it is a standard one, else ``"other"``.

    Django serves ``get`` as ``GET`` under WSGI and ASGI alike, so both label it ``GET``.
    """
    if method in METHODS:
        return method
    upper = method.upper() if isinstance(method, str) else ""
    return upper if upper in METHODS else OTHER


def is_bodiless(method: str, status_code: int) -> bool:
    """HEAD requests and 1xx/204/304 responses carry no body: delivered with the headers."""
    return method == "HEAD" or status_code in (204, 304) or 100 <= status_code < 200


def is_disconnect(exc: BaseException | None) -> bool:
    """Whether an exception means the client went away (rather than a failing body)."""
    if exc is None:
        return False
    if isinstance(exc, (ConnectionError, asyncio.CancelledError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _DISCONNECT_ERRNOS:
        return True
    return any(cls.__name__ in _DISCONNECT_NAMES for cls in type(exc).__mro__)


def classify(exc: BaseException | None) -> str | None:
    """Failure reason for an exception in flight at the end of delivery (None: no exception)."""
    if exc is None:
        return None
    return CLIENT_DISCONNECT if is_disconnect(exc) else STREAM_ERROR


class Delivery(NamedTuple):
    """What happened to one response. Immutable; given to sinks, receivers and callbacks.

    ``outcome`` is ``"delivered"`` or the failure reason; ``reason`` is ``None`` when delivered.
    ``duration`` runs from request start, ``send_duration`` from the moment the handler returned
    the response, both to the end of delivery, in seconds. ``time_to_first_byte`` runs from
    request start until the first body byte was handed to the server (bodiless responses: the
    headers), None when the response never got that far; ``chunks`` counts the body chunks
    (ASGI body messages) handed over. (A named tuple: immutable and about three times cheaper
    to build than a frozen dataclass, on every request.)
    """

    outcome: str
    reason: str | None
    method: str
    route: str
    status_code: int
    bytes_sent: int
    duration: float
    send_duration: float
    time_to_first_byte: float | None = None
    chunks: int = 0

    @property
    def delivered(self) -> bool:
        return self.reason is None


def route_of(request: Any) -> str | None:
    """The route template of a resolved request (None before or without URL resolution)."""
    match = getattr(request, "resolver_match", None)
    return None if match is None else match.route or "/"


class Sink(Protocol):
    """Consumes the two events of a tracked response. The contract every sink keeps:

    - **Order.** The pipeline runs the sinks in one fixed order: tracing, then the Prometheus
      metrics (their exemplars read :attr:`Tracker.span`, which the tracing sink publishes in
      its ``finished``), then the OpenTelemetry metrics, then the signal sink last, once every
      metric and span is recorded (receivers and callbacks see a finished picture).
    - **on_return.** Whether the sink has work when the handler returns. False (the usual
      case) keeps it out of :attr:`Tracker.returned_sinks`, so ``handler_returned`` is never
      called for it and a request pays nothing for it there. A class attribute, or a slot
      when it depends on how the sink was built (the metrics sink: multiprocess mode only).
    - **finished** gets the tracker with its outcome decided (``reason``, ``duration``,
      ``send_duration``); a sink that hands the outcome on reads :attr:`Tracker.delivery`,
      built on first use, so a request nobody receives a ``Delivery`` for never builds one. It
      may be bound as a slot (the metrics sink binds the collector's own ``record``): one call
      per response, no trampoline.
    - **Isolation.** An exception in either method is logged once per sink and event and
      never reaches the other sinks, the server or the client.
    - **Per request.** :attr:`Tracker.sinks` starts as the pipeline's; ``on_delivered()``
      appends the signal sink to one request's sinks when the pipeline has none (no
      receivers connected), so callbacks run for that request alone.
    """

    on_return: bool

    def handler_returned(self, tracker: Tracker) -> None: ...

    def finished(self, tracker: Tracker) -> None: ...


def _sink_failed(sink: object, event: str) -> None:
    """Log a sink's exception with its traceback once per sink and event, never raise."""
    key = f"{type(sink).__qualname__}.{event}"
    message = "django-sent-otel: %s failed; the response is not affected"
    log_once(logger, message, key, key=key, error=True)


#: The slots the tracing sink keeps its state in: the parent context it took between the
#: two events, and the span it ended, which it publishes for the sinks after it (the
#: metrics sink's exemplars read it, so tracing must come first).
TRACING_SLOTS: Final = ("span", "trace_start")

# Handler returns, and ends of delivery that followed one, in this process: the responses being
# sent right now are their difference, taken when someone asks (the in-flight gauge at scrape).
# ``next()`` of an itertools.count is one atomic step, so the request path takes no lock.
_returns = itertools.count()
_ends = itertools.count()
_count_returned = _returns.__next__
_count_ended = _ends.__next__
_sending_lock = threading.Lock()


#: Reads of the two counts before ``sending()`` settles for an estimate (see there).
_SENDING_READS: Final = 16


def sending() -> int:
    """Tracked responses between handler return and the end of their delivery, now.

    Exact when no response ends between the two reads of the end count around the read of
    the return count (a thread switch there used to count every response that ended in the
    meantime); tried a bounded number of times, after which the count is a lower bound.
    """
    with _sending_lock:
        # Each next() adds one to its count, so every pass adds two to both counts and the
        # difference is unchanged; ``again`` is ``ended + 1`` when nothing ended in between.
        for _ in range(_SENDING_READS):
            ended = next(_ends)
            returned = next(_returns)
            again = next(_ends)
            next(_returns)
            if again == ended + 1:
                break
        else:
            ended = again - 1
    return max(returned - ended, 0)


def _forked() -> None:
    """In a forked child the parent's responses in flight are not this process's."""
    global _returns, _ends, _count_returned, _count_ended, _sending_lock, _leave_lock
    _leave_lock = real_lock()
    _returns, _ends = itertools.count(), itertools.count()
    _count_returned, _count_ended = _returns.__next__, _ends.__next__
    _sending_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class Tracker:
    """The state of one tracked response, from request start to exactly one outcome.

    Adapters call :meth:`handler_returned` when the response leaves the handler (and the
    ASGI wrapper again with the status the server got), :meth:`add_bytes` as the body is
    handed over, and :meth:`finish` when delivery ends. The first :meth:`finish` decides;
    later calls are no-ops. The tracker holds the request and response only until it
    finishes, so it never keeps a reference cycle alive. Adapter state (how the body ended)
    stays in the adapters (the middleware's subclass); the tracing sink keeps its own in
    :data:`TRACING_SLOTS`. Every request builds one, so it is lean: slots, positional
    arguments, no ``Delivery`` unless a sink asks for it.
    """

    __slots__ = (
        "_delivery",
        "_open",
        "_work_stopped",  # unset until work_stopped() accounted the abandoned work
        "bytes_sent",
        "callbacks",  # on_delivered() appends, the signal sink runs them
        "chunks",
        "disconnected_at",
        "duration",
        "first_byte_at",
        "leave_callbacks",  # on_disconnect() appends, client_left() runs them
        "method",
        "reason",
        "request",
        "response",
        "returned_at",
        "returned_sinks",
        "route",
        "send_duration",
        "sinks",
        "started_at",
        "status_code",
        "unwatch",
        *TRACING_SLOTS,
    )
    reason: str | None
    duration: float
    send_duration: float
    _delivery: Delivery
    _work_stopped: bool

    def __init__(
        self,
        method: str | None = "",
        sinks: Sequence[Sink] = (),
        returned_sinks: Sequence[Sink] | None = None,
        request: Any = None,
        started_at: float | None = None,
    ) -> None:
        self.method = method if method in METHODS else normalize_method(method)
        self.sinks = sinks
        # The sinks with work to do when the handler returns (all of them unless told).
        self.returned_sinks = sinks if returned_sinks is None else returned_sinks
        self.started_at = perf_counter() if started_at is None else started_at
        self.request = request
        self.response: Any = None
        self.returned_at: float | None = None
        self.span: Any = None
        self.trace_start: Any = None
        self.callbacks: list[Callable[[Delivery], object]] | None = None
        #: When the client was known gone (``perf_counter``), None until then.
        self.disconnected_at: float | None = None
        self.leave_callbacks: list[Callable[[], object]] | None = None
        #: Set by an adapter watching the client (:meth:`watch`): stops it, at the outcome.
        self.unwatch: Callable[[], object] | None = None
        self.route = UNMATCHED
        self.status_code = self.bytes_sent = self.chunks = 0
        #: When the first body byte (bodiless: the headers) was handed to the server.
        self.first_byte_at: float | None = None
        # ``reason``, ``duration``, ``send_duration`` and ``_delivery`` are set by finish():
        # nobody reads them before. A one-element list: ``pop()`` is atomic, so two threads
        # can never both finish.
        self._open = [True]

    @property
    def done(self) -> bool:
        return not self._open

    @property
    def delivered(self) -> bool:
        """The outcome is decided and is "delivered" (False while open or after a failure)."""
        return not self._open and getattr(self, "reason", True) is None

    @property
    def outcome(self) -> str:
        return self.reason or DELIVERED

    def handler_returned(
        self,
        route: str | None,
        status_code: int,
        response: Any = None,
        at: float | None = None,
    ) -> bool:
        """The handler returned its response: the send phase starts now. False when the
        outcome was already decided (or the tracker discarded): nothing left to observe.

        A later call before the outcome (the ASGI wrapper seeing ``http.response.start`` after
        the middleware) only records the status the server got; a call after it is ignored.
        """
        if not self._open:
            return False  # a late response after the outcome was decided
        if self.returned_at is not None:
            self.status_code = status_code
            return True
        self.returned_at = perf_counter() if at is None else at
        _count_returned()
        if route:
            self.route = route
        self.status_code = status_code
        self.response = response
        if self.returned_sinks:  # often none (metrics only)
            for sink in self.returned_sinks:
                try:
                    sink.handler_returned(self)
                except Exception:
                    _sink_failed(sink, "handler_returned")
        return True

    def add_bytes(self, count: int) -> None:
        self.bytes_sent += count

    def add_chunk(self, size: int) -> None:
        """A body chunk of ``size`` bytes was handed to the server while the client was
        there; the first one marks the first byte. Ignored once the outcome is decided: the
        sinks have counted what was handed over until then."""
        if self._open:
            if self.first_byte_at is None:
                self.first_byte_at = perf_counter()
            self.chunks += 1
            self.bytes_sent += size

    def add_body(self, chunks: int, size: int) -> None:
        """Chunks and bytes of a body handed to the server, counted by the adapter (the first
        byte was marked as it went); ignored once the outcome is decided."""
        if self._open:
            self.chunks += chunks
            self.bytes_sent += size

    def headers_sent(self, at: float | None = None) -> None:
        """The first byte of a response without a body chunk yet: its headers (a bodiless
        response) or its empty final body. Only the first call counts."""
        if self.first_byte_at is None and self._open:
            self.first_byte_at = perf_counter() if at is None else at

    @property
    def time_to_first_byte(self) -> float | None:
        """Seconds from request start until the first byte was handed over, or None."""
        first = self.first_byte_at
        if first is None:
            return None
        elapsed = first - self.started_at
        return elapsed if elapsed > 0.0 else 0.0

    def discard(self) -> None:
        """Stop tracking without an outcome (an excluded path found after the fact)."""
        if self._open and self.returned_at is None:
            self._open.clear()
            self.request = self.response = None

    def finish(self, reason: str | None = None, at: float | None = None) -> bool:
        """Decide the outcome (``reason`` None means delivered) unless already decided;
        True when this call decided it."""
        if not self._open:
            return False  # decided: the common late call, without raising (about 2k less)
        try:
            self._open.pop()  # atomic: of two threads past the check, one decides
        except IndexError:
            return False
        end = perf_counter() if at is None else at
        if self.unwatch is not None:
            self._stop_watching()
        returned = self.returned_at
        if returned is None:
            if self.request is not None:
                # Ended before the handler returned (the client left while the view ran):
                # the route is known once URL resolution ran, before the view.
                self.route = route_of(self.request) or self.route
            self.send_duration = 0.0
        else:
            _count_ended()
            send = end - returned
            self.send_duration = send if send > 0.0 else 0.0
        duration = end - self.started_at
        self.duration = duration if duration > 0.0 else 0.0
        self.reason = reason
        if reason == CLIENT_DISCONNECT and self.disconnected_at is None:
            self.disconnected_at = end  # known gone now, when the work is over
        if self.leave_callbacks is not None:
            # The request is over: they never run (adapters report a client that left
            # while the work ran before they decide, see client_left()).
            self.leave_callbacks = None
        for sink in self.sinks:
            try:
                sink.finished(self)
            except Exception:
                _sink_failed(sink, "finished")
        self.request = self.response = self.span = self.trace_start = None
        self.callbacks = None
        return True

    # The client leaving while the work runs (see :func:`django_sent_otel.on_disconnect`).

    def client_left(self, at: float | None = None) -> bool:
        """An adapter saw the client gone: record the first moment and run the
        ``on_disconnect`` callbacks once, unless the response was delivered already (a
        client that read everything and closed). True when this call recorded it."""
        with _leave_lock:
            if self.disconnected_at is not None or self.delivered:
                return False
            self.disconnected_at = perf_counter() if at is None else at
            callbacks, self.leave_callbacks = self.leave_callbacks, None
        if callbacks:
            run_leave_callbacks(callbacks)
        return True

    def add_leave_callback(self, callback: Callable[[], object]) -> bool:
        """Run ``callback()`` when the client leaves (at once if it already left). False
        when the response was delivered: it will never run."""
        with _leave_lock:
            if self.delivered:
                return False
            if self.disconnected_at is None:
                if self.leave_callbacks is None:
                    self.leave_callbacks = [callback]
                else:
                    self.leave_callbacks.append(callback)
                return True
        run_leave_callbacks((callback,))
        return True

    def watch(self) -> bool:
        """Start watching the client (the adapter's knowledge: the WSGI middleware's tracker
        registers the request's connection with the watcher). The base tracker is the ASGI
        wrapper's, which sees ``http.disconnect`` as Django's listener reads it: nothing to
        start. False when this request cannot be watched."""
        return True

    def _stop_watching(self) -> None:
        unwatch, self.unwatch = self.unwatch, None
        try:
            if unwatch is not None:
                unwatch()
        except Exception:
            log_once(logger, "django-sent-otel: could not stop watching a client", error=True)

    def check_disconnected(self) -> bool:
        """Whether the client is gone, asked now without blocking (``is_disconnected``)."""
        return self.disconnected_at is not None

    def work_stopped(self, at: float | None = None) -> None:
        """The application stopped working on the request (view returned and body iteration
        ended, or the ASGI application returned): the time since the client was known gone
        is abandoned work, told to the sinks that count it, once."""
        left = self.disconnected_at
        if left is None:
            return
        try:
            self._work_stopped  # noqa: B018 - set once accounted
            return
        except AttributeError:
            self._work_stopped = True
        seconds = (perf_counter() if at is None else at) - left
        for sink in self.sinks:
            abandoned = getattr(sink, "abandoned", None)
            if abandoned is not None:
                try:
                    abandoned(self, seconds if seconds > 0.0 else 0.0)
                except Exception:
                    _sink_failed(sink, "abandoned")

    @property
    def delivery(self) -> Delivery:
        """The outcome as an immutable :class:`Delivery`, built once, on first use (only
        after :meth:`finish`)."""
        try:
            return self._delivery
        except AttributeError:  # the first time
            pass
        reason = self.reason
        # Positional tuple construction: a third of the cost of the keyword constructor.
        delivery: Delivery = new_tuple(
            Delivery,
            (
                reason or DELIVERED,
                reason,
                self.method,
                self.route,
                self.status_code,
                self.bytes_sent,
                self.duration,
                self.send_duration,
                self.time_to_first_byte,
                self.chunks,
            ),
        )
        self._delivery = delivery
        return delivery


#: Guards the hand-over between a client leaving (on the watcher's thread or the event loop)
#: and a callback registered at that moment: each callback runs exactly once. Taken only by
#: requests that register or are seen leaving.
_leave_lock = real_lock()

_LEAVE_CALLBACK_RAISED = (
    "django-sent-otel: on_disconnect callback %r raised (logged once; the response is not affected)"
)


def run_leave_callbacks(callbacks: Sequence[Callable[[], object]]) -> None:
    """Run ``on_disconnect`` callbacks in order; an exception is logged once, never raised."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            name = getattr(callback, "__qualname__", type(callback).__qualname__)
            key = f"leave callback {getattr(callback, '__module__', '')}.{name}"
            log_once(logger, _LEAVE_CALLBACK_RAISED, callback, key=key, error=True)


_CALLBACK_RAISED = (
    "django-sent-otel: on_delivered callback %r raised (logged once; the response is not affected)"
)


def run_callbacks(callbacks: Sequence[Callable[[Delivery], object]], delivery: Delivery) -> None:
    """Run user callbacks in order; an exception is swallowed and logged with its traceback
    (once per callback function at ERROR, later ones at DEBUG, so a failing callback cannot
    flood the logs)."""
    for callback in callbacks:
        try:
            callback(delivery)
        except Exception:
            name = getattr(callback, "__qualname__", type(callback).__qualname__)
            key = f"callback {getattr(callback, '__module__', '')}.{name}"
            log_once(logger, _CALLBACK_RAISED, callback, key=key, error=True)
