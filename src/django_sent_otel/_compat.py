"""Every use of a dependency's private detail: for a measured saving on every request, or
where a server offers no public way to tell it apart.

``tests/test_compat.py`` fails loudly when one of them changes shape; each function has a
public fallback so a change costs speed (or a server-specific refinement), never correctness.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace

#: ``tuple.__new__(cls, values)`` builds a named tuple from a tuple without its keyword
#: ``__new__``: a third of the cost of ``Delivery(...)`` ("plugin-*" rows of
#: ``make bench-instructions``).
new_tuple: Final = tuple.__new__

UNKNOWN: Final[Any] = object()


def _exc_info_exception() -> BaseException | None:
    return sys.exc_info()[1]


#: The exception being handled, or None: ``sys.exception()`` (Python 3.11+, no tuple built)
#: or its older spelling.
current_exception: Final = getattr(sys, "exception", _exc_info_exception)


def tracer_provider_set() -> Any:
    """The provider set in code with ``trace.set_tracer_provider()``, None when none was set,
    or :data:`UNKNOWN`. opentelemetry-api keeps it in ``trace._TRACER_PROVIDER``; reading it
    spares the "plugin-noop" row the environment lookup of ``trace.get_tracer_provider()``."""
    return getattr(trace, "_TRACER_PROVIDER", UNKNOWN)


def body_size(response: Any) -> int | None:
    """The length of an ``HttpResponse`` body from its parts (Django's ``_container``), or
    None. Summing their lengths spares the copy that ``response.content`` makes by joining
    them ("plugin-metrics" row with a multi-part body)."""
    try:
        container = response._container
        return len(container[0]) if len(container) == 1 else sum(map(len, container))
    except (AttributeError, TypeError, KeyError):  # not a list of bytes
        return None


def wrap_stream_iterator(response: Any, wrap: Callable[[Any], Any]) -> bool:
    """Put ``wrap`` around the iterator of a synchronous ``StreamingHttpResponse`` where
    Django keeps it (``_iterator``), inside the ``map(make_bytes, ...)`` its
    ``streaming_content`` gives the server; False when it is not there (the caller wraps
    ``streaming_content``). Setting ``streaming_content`` instead puts a second ``map`` and
    ``make_bytes`` call on every chunk: about 1.9k instructions per chunk ("plugin-metrics"
    streaming rows of ``make bench-instructions``)."""
    iterator = response.__dict__.get("_iterator")
    if iterator is None or getattr(response, "is_async", True):
        return False
    response._iterator = wrap(iterator)
    return True


_SPAN_KEY: Final[str | None] = getattr(trace.propagation, "_SPAN_KEY", None)


def span_in(context: Any) -> Any:
    """The span a context holds, or None. opentelemetry-api keeps it under
    ``trace.propagation._SPAN_KEY`` of the context (a mapping); reading it spares the two
    calls of ``trace.get_current_span(context)`` on every request with tracing ("plugin-sdk"
    row)."""
    if _SPAN_KEY is None:
        span = trace.get_current_span(context)
        return None if span is trace.INVALID_SPAN else span
    return context.get(_SPAN_KEY)


def _context_getter() -> Any:
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    get = getattr(var, "get", None)
    # Only the API's own contextvars runtime: another runtime keeps the context elsewhere.
    if type(runtime).__name__ != "ContextVarsRuntimeContext" or not callable(get):
        return otel_context.get_current
    return get


#: The current OpenTelemetry context: the runtime context's ``ContextVar.get`` (a C call)
#: where opentelemetry-api keeps it in ``context._RUNTIME_CONTEXT._current_context``, else the
#: public ``context.get_current`` (two Python calls more on every request with tracing,
#: "plugin-sdk" row).
current_context: Final = _context_getter()


#: The classes whose bound ``send`` the ASGI wrapper reads a "client gone" fact from: uvicorn's
#: ``RequestResponseCycle`` (h11 and httptools, also under gunicorn's uvicorn worker) and
#: hypercorn's ``HTTPStream``.
UVICORN_CYCLES: Final = frozenset(
    {
        ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle"),
        ("uvicorn.protocols.http.h11_impl", "RequestResponseCycle"),
    }
)
HYPERCORN_STREAM: Final = ("hypercorn.protocol.http_stream", "HTTPStream")
DAPHNE_SERVER: Final = ("daphne.server", "Server")


def client_gone_probe(send: Any) -> Callable[[], bool] | None:
    """A zero-argument callable telling whether the server behind an ASGI ``send`` knows
    its client is gone, or None for a server that does not say.

    uvicorn, hypercorn and daphne drop a body message sent after they saw the connection close,
    without a word to ``send()``'s caller; each keeps the fact where this reads it: uvicorn on
    the cycle ``send`` is bound to (``disconnected``, and its transport's ``is_closing()``),
    hypercorn on its stream (``closed``), daphne in ``Server.connections[protocol]`` (``send``
    is ``partial(server.handle_reply, protocol)``). Read by class and module name, so no server
    is imported; anything else (or a middleware between the server and the wrapper) gets None.

    The probe runs before every body message: it is a closure, called from Python without a
    ``partial`` in between (1.1k instructions per chunk less in front of a uvicorn-shaped send).
    """
    owner = getattr(send, "__self__", None)
    if owner is not None:
        cls = type(owner)
        name = (cls.__module__, cls.__qualname__)
        if name in UVICORN_CYCLES:
            transport: Any = getattr(owner, "transport", None)
            if not hasattr(owner, "disconnected") or not callable(
                getattr(transport, "is_closing", None)
            ):
                return None
            cycle, is_closing = owner, transport.is_closing

            def uvicorn_gone() -> bool:
                # ``disconnected`` is set in connection_lost(), a loop iteration after the
                # transport saw the reset; a write that failed closes the transport at once
                # (is_closing(), public asyncio), after which uvicorn's writes vanish without
                # pausing: Django then sends the rest of a body in memory without yielding,
                # before connection_lost() can run.
                return bool(cycle.disconnected or is_closing())

            return uvicorn_gone
        if name == HYPERCORN_STREAM and hasattr(owner, "closed"):
            return partial(getattr, owner, "closed")
        return None
    if isinstance(send, partial) and len(send.args) == 1:
        server = getattr(send.func, "__self__", None)
        cls = type(server)
        connections = getattr(server, "connections", None)
        if (cls.__module__, cls.__qualname__) == DAPHNE_SERVER and isinstance(connections, dict):
            protocol = send.args[0]

            def daphne_gone() -> bool:
                details = connections.get(protocol)
                return details is None or "disconnected" in details

            return daphne_gone
    return None


def _go_float(value: float) -> str:
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go writes an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _float_to_go_string() -> Any:
    try:
        from prometheus_client.utils import floatToGoString
    except ImportError:
        return _go_float
    return floatToGoString


#: A histogram bound as prometheus_client formats its ``le`` label (``0.5``, ``1.0``,
#: ``+Inf``): its ``utils.floatToGoString``, undocumented; the collector's bucket labels must
#: be the library's own (``tests/test_metrics_equivalence.py`` compares the expositions).
#: The fallback is the same rule, for a release that moves it.
float_to_go_string: Final[Callable[[float], str]] = _float_to_go_string()


def multiprocess_value() -> Any:
    """The value class prometheus_client's own metrics write with (``values.ValueClass``,
    undocumented: the memory-mapped multiprocess value when ``PROMETHEUS_MULTIPROC_DIR`` was
    set at its import). The multiprocess writer needs values that ``MultiProcessCollector``
    merges, and there is no public way to make one: no fallback, a loud test."""
    from prometheus_client import values

    return values.ValueClass


#: The dotted path of the middleware opentelemetry-instrumentation-django inserts first in
#: ``MIDDLEWARE`` (a private class of its package). The system check and the instrumentor
#: place ``DeliveryMiddleware`` right after it.
DJANGO_OTEL_MIDDLEWARE: Final = (
    "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
)


def has_receivers(signal: Any, sender: Any) -> bool:
    """Whether a Django ``Signal`` has a receiver for ``sender``: its ``receivers`` list (an
    undocumented attribute; a truth test, no lookup, on every delivery while the signal sink
    runs: every receiver it holds is connected for any sender or for ``sender`` alone, the only
    one the plugin sends with), else the public ``has_listeners(sender)``."""
    receivers = getattr(signal, "receivers", None)
    if type(receivers) is list:
        return bool(receivers)
    return bool(signal.has_listeners(sender))


def file_to_stream(response: Any) -> Any:
    """The file a ``FileResponse`` streams, or None: Django's undocumented ``file_to_stream``,
    which its WSGI handler itself hands to ``wsgi.file_wrapper`` (sendfile). Reading it keeps
    that body untouched and tells how far the server read the file."""
    return getattr(response, "file_to_stream", None)


# Knowing the client left while a WSGI view runs: where each server keeps the connection.


def _original(module: str, name: str) -> Any:
    """The attribute before gevent's monkey-patching replaced it (itself when unpatched).

    Under gunicorn's gevent worker ``threading`` and ``select`` are gevent's: the disconnect
    watcher needs a real thread blocking in a real ``epoll``, or it would block the hub."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None:
        try:
            return gevent_monkey.get_original(module, name)
        except Exception:
            pass
    return getattr(sys.modules.get(module) or __import__(module), name)


def real_epoll() -> Any:
    """``select.epoll`` as the OS offers it (OSError where there is none: not Linux)."""
    try:
        return _original("select", "epoll")
    except AttributeError:
        raise OSError("epoll is not available on this platform") from None


def real_poll() -> Any:
    """``select.poll`` as the OS offers it, or None (gevent's aggressive patching removes it)."""
    try:
        return _original("select", "poll")
    except AttributeError:
        return None


def real_lock() -> Any:
    """A lock of the OS, even under gevent: held for a few instructions by the watcher's
    thread and the request's, never across a switch, so it can never block the hub."""
    return _original("_thread", "allocate_lock")()


def start_real_thread(target: Any) -> None:
    """Run ``target`` on a new OS thread, even when gevent patched ``threading`` (no
    ``threading.Thread``: its start-up handshake waits on a lock that gevent replaced)."""
    _original("_thread", "start_new_thread")(target, ())


def _runserver_socket(environ: Any) -> Any:
    """runserver (wsgiref): ``wsgi.input`` is Django's ``LimitedStream`` over the handler's
    ``rfile``, whose raw ``SocketIO`` holds the connection (``LimitedStream._read`` is the
    bound ``rfile.read``, ``SocketIO._sock`` the socket)."""
    stream = environ.get("wsgi.input")
    rfile = getattr(getattr(stream, "_read", None), "__self__", None)
    return getattr(getattr(rfile, "raw", None), "_sock", None)


def waitress_looks_ahead(probe: Any) -> bool:
    """Whether waitress reads on while the application runs (``channel_request_lookahead``
    > 0), without which its ``client_disconnected()`` never turns True: the setting lives in
    the channel's ``adj`` (``Adjustments``), the callable being the channel's bound method.
    Unknown (another shape): assumed on."""
    adj = getattr(getattr(probe, "__self__", None), "adj", None)
    lookahead = getattr(adj, "channel_request_lookahead", None)
    return not isinstance(lookahead, int) or lookahead > 0


def connection_of(environ: Any) -> int | Any | None:
    """How to know the client of a WSGI request left: the connection's file descriptor, a
    callable answering "gone?" (waitress), or None (the server offers neither: granian).

    Must run on the request's thread (uWSGI's ``connection_fd()`` is the current request's).
    - gunicorn (sync, gthread, gevent): ``environ["gunicorn.socket"]``.
    - uWSGI: ``uwsgi.connection_fd()``.
    - waitress: ``environ["waitress.client_disconnected"]``, which notices a client that left
      only with ``channel_request_lookahead`` > 0 (the channel reads on while the view runs).
    - runserver: the socket behind ``wsgi.input`` (see :func:`_runserver_socket`).
    """
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        return int(sock.fileno())
    probe = environ.get("waitress.client_disconnected")
    if probe is not None:
        return probe if waitress_looks_ahead(probe) else None
    if "uwsgi.version" in environ:
        uwsgi = sys.modules.get("uwsgi")
        return None if uwsgi is None else int(uwsgi.connection_fd())
    sock = _runserver_socket(environ)
    if sock is not None:
        return int(sock.fileno())
    return None
