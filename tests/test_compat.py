"""The private details of dependencies that ``django_sent_otel._compat`` relies on.

Each test fails loudly when a dependency changes the shape the plugin reads; the fix then
goes into ``_compat`` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from django_sent_otel import _compat
from django_sent_otel.delivery import Delivery
from tests.harness.clients import full_read
from tests.harness.servers import Server


def test_new_tuple_builds_a_named_tuple_positionally() -> None:
    values = ("delivered", None, "GET", "a/", 200, 5, 0.5, 0.25, 0.125, 2)
    built = _compat.new_tuple(Delivery, values)
    assert type(built) is Delivery
    assert built == Delivery(*values)
    assert built.route == "a/" and built.send_duration == 0.25 and built.chunks == 2


def test_opentelemetry_keeps_the_provider_set_in_code(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hasattr(trace, "_TRACER_PROVIDER"), "opentelemetry-api renamed _TRACER_PROVIDER"
    provider = TracerProvider()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    assert _compat.tracer_provider_set() is provider
    assert trace.get_tracer_provider() is provider  # the public API reads the same variable
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    assert _compat.tracer_provider_set() is None


def test_http_response_keeps_its_body_parts_in_container() -> None:
    response = HttpResponse(b"ab")
    response.write(b"cde")
    response.write("é")
    assert type(response._container) is list, "Django no longer keeps a list of parts"
    assert _compat.body_size(response) == len(response.content) == 7
    assert _compat.body_size(HttpResponse(b"one part")) == 8
    assert _compat.body_size(HttpResponse(b"")) == 0


def test_other_responses_have_no_body_size(tmp_path: pytest.TempPathFactory) -> None:
    assert _compat.body_size(StreamingHttpResponse(iter([b"x"]))) is None
    path = tmp_path / "f.bin"  # type: ignore[operator]
    path.write_bytes(b"data")
    with open(path, "rb") as f:
        assert _compat.body_size(FileResponse(f)) is None


def test_file_response_keeps_the_file_it_streams(tmp_path: Path) -> None:
    """Django's WSGI handler hands ``file_to_stream`` to ``wsgi.file_wrapper``: the same
    attribute tells the middleware to leave the body alone."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    with open(path, "rb") as f:
        response = FileResponse(f)
        assert _compat.file_to_stream(response) is f, "FileResponse.file_to_stream moved"
    assert _compat.file_to_stream(FileResponse(iter([b"x"]))) is None
    assert _compat.file_to_stream(HttpResponse(b"x")) is None


def test_opentelemetry_keeps_the_current_span_under_its_key() -> None:
    from opentelemetry import context
    from opentelemetry.trace.propagation import _SPAN_KEY

    assert isinstance(_SPAN_KEY, str), "opentelemetry-api renamed trace.propagation._SPAN_KEY"
    assert _compat.span_in(context.get_current()) is None
    span = TracerProvider().get_tracer("t").start_span("s")
    ctx = trace.set_span_in_context(span)
    assert _compat.span_in(ctx) is span is trace.get_current_span(ctx)
    span.end()


def test_opentelemetry_keeps_the_current_context_in_a_context_variable() -> None:
    from opentelemetry import context
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    runtime = getattr(context, "_RUNTIME_CONTEXT", None)
    assert isinstance(runtime, ContextVarsRuntimeContext), "the runtime context moved"
    assert _compat.current_context == runtime._current_context.get, "not the fast path"
    assert _compat.current_context() is context.get_current()
    span = TracerProvider().get_tracer("t").start_span("s")
    token = context.attach(trace.set_span_in_context(span))
    try:
        assert _compat.current_context() is context.get_current()
        assert _compat.span_in(_compat.current_context()) is span
    finally:
        context.detach(token)
        span.end()
    assert _compat.span_in(_compat.current_context()) is None


def _granian_native() -> Any:
    return pytest.importorskip(
        "granian._granian", reason="granian is not installed (the test extra installs it)"
    )


#: What ``client_gone_probe`` reads from the ``send`` each server hands the application.
GONE_PROBES = {
    "uvicorn": b"gone=False",
    "gunicorn-uvicorn": b"gone=False",
    "hypercorn": b"gone=False",
    "daphne": b"gone=False",
    "granian-asgi": b"none",
}


@pytest.mark.servers
@pytest.mark.parametrize(("kind", "expected"), GONE_PROBES.items())
def test_servers_say_whether_their_client_is_gone(
    tmp_path: Path, kind: str, expected: bytes
) -> None:
    """The shapes ``client_gone_probe`` reads (uvicorn's cycle and transport, hypercorn's
    stream, daphne's connection table), from real servers: a renamed attribute answers
    ``none`` here. That the flag turns True is shown by
    ``tests/servers/test_streaming.py`` (an aborted file counts only what was handed over)."""
    if kind == "granian-asgi":
        _granian_native()
    with Server(kind, app="tests.asgi:gone_probe", log_dir=tmp_path) as server:
        response = full_read(server.port, "/", keep_body=True)
        log = server.log_tail()
    assert (response.status, response.body) == (200, expected), f"{kind}: {response}\n{log}"


def test_streaming_response_keeps_its_iterator_where_the_wrapper_reads_it() -> None:
    """``wrap_stream_iterator`` wraps Django's ``_iterator``, inside the ``make_bytes`` map the
    server reads: the wrapper sees the view's own chunks, the server gets bytes."""
    response = StreamingHttpResponse(iter(["é", b"b"]))
    seen: list[Any] = []

    def wrap(iterator: Any) -> Any:
        for chunk in iterator:
            seen.append(chunk)
            yield chunk

    assert _compat.wrap_stream_iterator(response, wrap)
    assert b"".join(response) == "é".encode() + b"b"
    assert seen == ["é", b"b"]

    async def body() -> Any:
        yield b"x"

    assert not _compat.wrap_stream_iterator(StreamingHttpResponse(body()), wrap)


def test_prometheus_client_formats_bucket_bounds_with_float_to_go_string() -> None:
    from prometheus_client.utils import floatToGoString

    from django_sent_otel._names import DEFAULT_BUCKETS

    assert _compat.float_to_go_string is floatToGoString, "not prometheus_client's formatter"
    # The fallback formats every bound the way the library does.
    for bound in (*DEFAULT_BUCKETS, 1, 2.5, 1e3, 12345678.0, float("inf"), float("-inf")):
        assert _compat._go_float(bound) == floatToGoString(bound), bound


def test_prometheus_client_multiprocess_values_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``values.ValueClass``: what the multiprocess writer creates its values with, called as
    prometheus_client's own metrics call it; ``MultiProcessCollector`` must merge them."""
    from prometheus_client import multiprocess, values

    assert hasattr(values, "ValueClass"), "prometheus_client renamed values.ValueClass"
    assert _compat.multiprocess_value() is values.ValueClass
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: 4242))
    value = _compat.multiprocess_value()(
        "counter", "probe", "probe_total", ("route",), ("a/",), "help", multiprocess_mode=""
    )
    value.set(3)
    merged = multiprocess.MultiProcessCollector(None, path=str(tmp_path))  # type: ignore[no-untyped-call]
    samples = [s for f in merged.collect() for s in f.samples]  # type: ignore[no-untyped-call]
    assert [(s.name, s.labels, s.value) for s in samples] == [("probe_total", {"route": "a/"}, 3.0)]


def test_the_django_instrumentation_inserts_the_middleware_path_we_name() -> None:
    from opentelemetry.instrumentation import django as otel_django
    from opentelemetry.instrumentation.django.middleware.otel_middleware import (
        _DjangoMiddleware,
    )

    path = f"{_DjangoMiddleware.__module__}.{_DjangoMiddleware.__qualname__}"
    assert path == _compat.DJANGO_OTEL_MIDDLEWARE
    assert otel_django.DjangoInstrumentor._opentelemetry_middleware == path


def test_django_signals_keep_their_receivers_in_a_list() -> None:
    from django.dispatch import Signal

    signal = Signal()
    assert type(signal.receivers) is list, "Django no longer keeps Signal.receivers as a list"
    assert _compat.has_receivers(signal, Delivery) is False

    def receiver(**kwargs: Any) -> None:
        return None

    signal.connect(receiver, sender=Delivery)
    assert _compat.has_receivers(signal, Delivery) is True
    assert signal.has_listeners(Delivery)  # the public fallback agrees


def test_has_receivers_falls_back_to_has_listeners() -> None:
    class Other:
        receivers = None

        def has_listeners(self, sender: Any) -> bool:
            return sender is Delivery

    assert _compat.has_receivers(Other(), Delivery) is True
    assert _compat.has_receivers(Other(), object) is False


# Knowing the client left: where each WSGI server keeps the connection.


def test_runserver_keeps_the_socket_behind_wsgi_input() -> None:
    """runserver's ``wsgi.input`` is Django's ``LimitedStream`` over the handler's ``rfile``,
    whose raw ``SocketIO`` holds the socket (``_read.__self__.raw._sock``)."""
    import socket as socket_module

    from django.core.handlers.wsgi import LimitedStream

    a, b = socket_module.socketpair()
    try:
        rfile = a.makefile("rb", -1)  # as socketserver.StreamRequestHandler makes it
        environ = {"wsgi.input": LimitedStream(rfile, 0)}
        assert _compat._runserver_socket(environ) is a
        assert _compat.connection_of(environ) == a.fileno()
        rfile.close()
    finally:
        a.close()
        b.close()


def test_waitress_keeps_the_lookahead_on_the_channel() -> None:
    """``waitress.client_disconnected`` is the channel's bound method; the channel's ``adj``
    has ``channel_request_lookahead`` (0: waitress never notices a client leaving)."""
    from waitress.adjustments import Adjustments
    from waitress.channel import HTTPChannel

    channel = HTTPChannel.__new__(HTTPChannel)
    channel.adj = Adjustments(channel_request_lookahead=0)
    probe = channel.check_client_disconnected
    assert not _compat.waitress_looks_ahead(probe)
    assert _compat.connection_of({"waitress.client_disconnected": probe}) is None
    channel.adj = Adjustments(channel_request_lookahead=1)
    assert _compat.waitress_looks_ahead(probe)
    assert _compat.connection_of({"waitress.client_disconnected": probe}) is probe


def test_gevent_keeps_the_originals_it_patched(tmp_path: Path) -> None:
    """Under gevent's monkey-patching ``gevent.monkey.get_original`` still gives the OS's
    ``epoll``, ``poll``, lock and thread start: checked in a patched child interpreter."""
    import subprocess
    import sys

    pytest.importorskip("gevent")
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import _thread, select\n"
        "from django_sent_otel import _compat\n"
        "assert _compat.real_epoll() is monkey.get_original('select', 'epoll')\n"
        "assert _compat.real_poll() is not None\n"
        "lock = _compat.real_lock()\n"
        "assert type(lock) is monkey.get_original('_thread', 'LockType')\n"
        "import threading\n"
        "assert threading.Lock is not monkey.get_original('threading', 'Lock')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
