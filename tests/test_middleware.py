"""DeliveryMiddleware under Django's sync and async test clients, with real metrics and spans."""

from __future__ import annotations

import asyncio
import gc
import logging
import select
import socket
import struct
import sys
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import django_sent_otel
from django_sent_otel import signals
from django_sent_otel.delivery import sending
from django_sent_otel.middleware import DeliveryMiddleware
from django_sent_otel.signals import response_delivered
from tests import views
from tests.harness.deliveries import Deliveries
from tests.harness.names import (
    CLIENT_DISCONNECT,
    DELIVERED,
    DELIVERED_TOTAL,
    DELIVERY_DURATION,
    FAILURES_TOTAL,
    SEND_DURATION,
    SENDING,
    SENT_BYTES_TOTAL,
    STREAM_ERROR,
    sample,
)

pytestmark = pytest.mark.usefixtures("registry")


def test_small_response_delivered(deliveries: Deliveries, registry: CollectorRegistry) -> None:
    in_flight = sending()  # other tests' trackers still open (the count is per process)
    response = Client().get("/small/")
    assert response.status_code == 200
    d = deliveries.only()
    assert (d.outcome, d.reason, d.method, d.route, d.status_code) == (
        DELIVERED,
        None,
        "GET",
        "small/",
        200,
    )
    assert d.bytes_sent == len(response.content)
    assert 0 <= d.send_duration <= d.duration
    labels = {"method": "GET", "route": "small/"}
    assert sample(registry, DELIVERED_TOTAL, status=200, **labels) == 1
    assert sample(registry, f"{DELIVERY_DURATION}_count", **labels) == 1
    assert sample(registry, f"{SEND_DURATION}_count", **labels) == 1
    assert sample(registry, SENT_BYTES_TOTAL, **labels) == d.bytes_sent
    assert sample(registry, SENDING) == in_flight


def test_signal_gets_request_and_response(deliveries: Deliveries) -> None:
    response = Client().get("/articles/2024/")
    request, sent, d = deliveries.signals[0]
    assert request.path == "/articles/2024/"
    assert sent is response
    assert d.route == "articles/<int:year>/"


def test_stream_fully_read(deliveries: Deliveries) -> None:
    response = Client().get("/stream/")
    body = b"".join(response.streaming_content)
    d = deliveries.only()
    assert (d.outcome, d.route, d.bytes_sent) == (DELIVERED, "stream/", len(body))


def test_stream_abandoned_is_client_disconnect(
    deliveries: Deliveries, registry: CollectorRegistry
) -> None:
    response = Client().get("/stream/")
    first = next(iter(response.streaming_content))
    response.close()  # the server stopped iterating: the client went away
    d = deliveries.only()
    assert (d.outcome, d.reason, d.bytes_sent) == (
        CLIENT_DISCONNECT,
        CLIENT_DISCONNECT,
        len(first),
    )
    assert (
        sample(
            registry,
            FAILURES_TOTAL,
            method="GET",
            route="stream/",
            status=200,
            reason="client_disconnect",
        )
        == 1
    )
    assert sample(registry, f"{DELIVERY_DURATION}_count", method="GET", route="stream/") == 0


def test_stream_raising_is_stream_error(deliveries: Deliveries) -> None:
    response = Client().get("/error-stream/")
    with pytest.raises(RuntimeError):
        b"".join(response.streaming_content)
    response.close()
    d = deliveries.only()
    assert d.outcome == STREAM_ERROR
    assert d.bytes_sent > 0


def test_disconnect_exception_in_flight_at_close(deliveries: Deliveries) -> None:
    response = Client().get("/small/")
    deliveries.clear()
    # What gunicorn does when the socket write fails: close() runs while the error propagates.
    response = DeliveryMiddleware(lambda r: HttpResponse(b"x" * 10))(RequestFactory().get("/"))
    try:
        raise BrokenPipeError
    except BrokenPipeError:
        response.close()
    assert deliveries.only().outcome == CLIENT_DISCONNECT


def test_file_response_untouched(deliveries: Deliveries, tmp_path: Any) -> None:
    from django.http import FileResponse

    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 5000)

    def view(request: HttpRequest) -> FileResponse:
        return FileResponse(open(path, "rb"))

    request = RequestFactory().get("/")
    request.META["wsgi.file_wrapper"] = object()
    response = DeliveryMiddleware(view)(request)
    filelike = response.file_to_stream
    assert filelike is not None  # streaming_content was not replaced
    response.close()
    d = deliveries.only()
    assert (d.outcome, d.bytes_sent) == (DELIVERED, 5000)

    deliveries.clear()
    response = DeliveryMiddleware(view)(RequestFactory().get("/"))  # iterated, no file wrapper
    iterator = iter(response)
    next(iterator)
    response.close()
    d = deliveries.only()
    assert d.outcome == CLIENT_DISCONNECT
    assert 0 < d.bytes_sent <= 5000


@pytest.mark.parametrize(("path", "status"), [("/empty/", 204), ("/not-modified/", 304)])
def test_bodiless(deliveries: Deliveries, path: str, status: int) -> None:
    Client().get(path)
    d = deliveries.only()
    assert (d.outcome, d.status_code, d.bytes_sent) == (DELIVERED, status, 0)


def test_head(deliveries: Deliveries) -> None:
    # The test client drops a HEAD streaming body without closing it; a server closes.
    Client().head("/stream/").close()
    d = deliveries.only()
    assert (d.method, d.outcome, d.bytes_sent) == ("HEAD", DELIVERED, 0)


def test_unmatched_and_junk_methods(deliveries: Deliveries, registry: CollectorRegistry) -> None:
    client = Client()
    client.get("/no/such/path/?q=secret")
    client.generic("PROPFIND", "/small/")
    assert [(d.method, d.route, d.status_code) for d in deliveries] == [
        ("GET", "unmatched", 404),
        ("other", "small/", 200),
    ]
    # The Prometheus label stays "other" (the spans say "_OTHER", as OpenTelemetry does).
    labels = {"method": "other", "route": "small/", "status": 200}
    assert sample(registry, "django_http_responses_delivered_total", **labels) == 1
    exposition = b"".join(
        s.name.encode() + repr(s.labels).encode() for f in registry.collect() for s in f.samples
    )
    assert b"no/such" not in exposition and b"secret" not in exposition


def test_view_exception_is_a_delivered_500(deliveries: Deliveries) -> None:
    client = Client(raise_request_exception=False)
    assert client.get("/crash/").status_code == 500
    d = deliveries.only()
    assert (d.outcome, d.status_code, d.route) == (DELIVERED, 500, "crash/")


def test_metrics_endpoint_is_not_tracked(deliveries: Deliveries) -> None:
    assert Client().get("/metrics").status_code == 200
    assert deliveries == []


@override_settings(SENT_OTEL_EXCLUDED_PATHS=[r"^/small/$"])
def test_excluded_paths(deliveries: Deliveries) -> None:
    Client().get("/small/")
    Client().get("/articles/1/")
    assert [d.route for d in deliveries] == ["articles/<int:year>/"]


@override_settings(SENT_OTEL_ENABLED=False)
def test_disabled(deliveries: Deliveries) -> None:
    Client().get("/small/")
    assert deliveries == []


def test_on_delivered_callbacks(deliveries: Deliveries) -> None:
    seen: list[str] = []

    def view(request: HttpRequest) -> HttpResponse:
        assert django_sent_otel.on_delivered(request, lambda d: seen.append("first:" + d.outcome))
        django_sent_otel.on_delivered(request, lambda d: seen.append("second"))
        return HttpResponse(b"ok")

    response = DeliveryMiddleware(view)(RequestFactory().get("/"))
    assert seen == []
    response.close()
    assert seen == ["first:delivered", "second"]


def test_on_delivered_rejects_non_callables() -> None:
    with pytest.raises(TypeError):
        django_sent_otel.on_delivered(RequestFactory().get("/"), "not callable")  # type: ignore[arg-type]


def test_on_delivered_untracked_request_warns(caplog: pytest.LogCaptureFixture) -> None:
    assert django_sent_otel.on_delivered(RequestFactory().get("/"), print) is False


def test_failing_receiver_and_callback_do_not_change_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bad_receiver(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    def view(request: HttpRequest) -> HttpResponse:
        django_sent_otel.on_delivered(request, lambda d: 1 / 0)
        return HttpResponse(b"body")

    response_delivered.connect(bad_receiver, weak=False)
    try:
        with caplog.at_level(logging.ERROR):
            response = DeliveryMiddleware(view)(RequestFactory().get("/"))
            response.close()
    finally:
        response_delivered.disconnect(bad_receiver)
    assert response.content == b"body"
    assert "receiver bug" in caplog.text
    assert "ZeroDivisionError" in caplog.text


def _garbage_cycles(handler: Any, path: str) -> int:
    """Objects only the cycle collector could free after 200 requests through ``handler``."""
    factory = RequestFactory()
    gc.collect()
    gc.disable()
    try:
        for _ in range(200):
            response = handler(factory.get(path))
            b"".join(response)
            response.close()
        del response
        return gc.collect()
    finally:
        gc.enable()


@pytest.mark.parametrize("path", ["/small/", "/stream/", "/articles/1/"])
def test_close_hook_leaves_no_reference_cycle(path: str) -> None:
    from django.test.client import RequestFactory as _RF  # noqa: F401
    from django.urls import resolve

    def view(request: HttpRequest) -> Any:
        match = resolve(request.path_info)
        request.resolver_match = match
        return match.func(request, *match.args, **match.kwargs)

    bare = _garbage_cycles(view, path)
    tracked = _garbage_cycles(DeliveryMiddleware(view), path)
    assert tracked <= bare, (tracked, bare)


def test_span_for_a_delivered_response(spans: InMemorySpanExporter) -> None:
    Client().get("/articles/2020/")
    (span,) = spans.get_finished_spans()
    assert span.name == "response-delivered"
    assert span.kind.name == "INTERNAL"
    attributes = dict(span.attributes or {})
    first_byte = attributes.pop("django_sent_otel.response.time_to_first_byte")
    assert isinstance(first_byte, float)
    # The body goes to the server with the handler's return, within the span's duration.
    assert 0 < first_byte <= (span.end_time - span.start_time) / 1e9 + first_byte
    assert attributes == {
        "http.request.method": "GET",
        "http.route": "articles/<int:year>/",
        "http.response.status_code": 200,
        "http.response.body.size": len(b"" + Client().get("/articles/2020/").content),
        "django_sent_otel.response.chunks": 1,
        "django_sent_otel.delivery.outcome": "delivered",
    }
    assert span.status.status_code.name == "UNSET"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.44.0"


def test_span_schema_url_is_a_published_semconv_version() -> None:
    from opentelemetry.semconv.schemas import Schemas

    from django_sent_otel.tracing import SCHEMA_URL

    assert SCHEMA_URL in {schema.value for schema in Schemas}


def test_span_conventions_for_unknown_values(spans: InMemorySpanExporter) -> None:
    """A non-standard method is ``_OTHER``; no route when nothing matched."""
    response = Client().generic("PROPFIND", "/no-such-page/")
    assert response.status_code == 404
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["http.request.method"] == "_OTHER"
    assert "http.route" not in attributes
    assert attributes["http.response.status_code"] == 404


def test_span_without_a_response_has_no_status_code(spans: InMemorySpanExporter) -> None:
    """The client left while the view ran: no status code was ever chosen."""
    from django_sent_otel.delivery import Tracker
    from django_sent_otel.pipeline import runtime
    from django_sent_otel.tracing import TracingSink

    (sink,) = [s for s in runtime().sinks if isinstance(s, TracingSink)]
    tracker = Tracker("GET", [sink], request=RequestFactory().get("/x/"))
    tracker.finish("client_disconnect")
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert "http.response.status_code" not in attributes
    assert "http.route" not in attributes
    assert attributes["error.type"] == "client_disconnect"


def test_span_for_a_failed_response(spans: InMemorySpanExporter) -> None:
    response = Client().get("/stream/")
    next(iter(response.streaming_content))
    response.close()
    (span,) = spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "client_disconnect"
    assert span.attributes["django_sent_otel.delivery.outcome"] == "client_disconnect"
    assert "delivery.outcome" not in span.attributes  # the unnamespaced key is gone


def test_span_honours_incoming_traceparent(spans: InMemorySpanExporter) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    Client().get("/small/", HTTP_TRACEPARENT=f"00-{trace_id}-00f067aa0ba902b7-01")
    (span,) = spans.get_finished_spans()
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"


def test_span_is_child_of_the_current_span(spans: InMemorySpanExporter) -> None:
    from tests import slots

    tracer = slots.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("server") as server:
        response = DeliveryMiddleware(lambda r: HttpResponse(b"x"))(RequestFactory().get("/"))
    response.close()
    delivered = [s for s in spans.get_finished_spans() if s.name == "response-delivered"]
    assert delivered[0].parent is not None
    assert delivered[0].parent.span_id == server.get_span_context().span_id
    assert delivered[0].context.trace_id == server.get_span_context().trace_id


def test_span_parent_is_what_was_current_when_the_handler_returned(
    spans: InMemorySpanExporter,
) -> None:
    """A span current only while the server closes the response (a WSGI middleware's, say) is
    not the parent: the parent is decided when the handler returns, here none (a root)."""
    from tests import slots

    tracer = slots.tracer_provider.get_tracer("test")
    response = DeliveryMiddleware(lambda r: HttpResponse(b"x"))(RequestFactory().get("/"))
    with tracer.start_as_current_span("closing"):
        response.close()
    (delivered,) = [s for s in spans.get_finished_spans() if s.name == "response-delivered"]
    assert delivered.parent is None


def test_streaming_delivery_span_lasts_the_send_phase(spans: InMemorySpanExporter) -> None:
    def view(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(iter([b"a", b"b"]))

    response = DeliveryMiddleware(view)(RequestFactory().get("/"))
    assert spans.get_finished_spans() == ()
    assert b"".join(response) == b"ab"
    response.close()
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None and span.attributes["http.response.body.size"] == 2


# Async: the same middleware in async mode (no thread hops), through the async test client.


async def test_async_small(deliveries: Deliveries) -> None:
    response = await AsyncClient().get("/async-small/")
    assert response.status_code == 200
    d = deliveries.only()
    assert (d.outcome, d.route, d.bytes_sent) == (
        DELIVERED,
        "async-small/",
        len(response.content),
    )


async def test_async_stream_fully_read(deliveries: Deliveries) -> None:
    response = await AsyncClient().get("/astream/")
    body = b"".join([chunk async for chunk in response.streaming_content])
    await asyncio.gather(*signals._pending)  # close() ran on the loop: the signal is a task
    d = deliveries.only()
    assert (d.outcome, d.bytes_sent) == (DELIVERED, len(body))


async def test_async_stream_abandoned(deliveries: Deliveries) -> None:
    response = await AsyncClient().get("/astream/")
    iterator = aiter(response.streaming_content)
    await anext(iterator)
    await iterator.aclose()
    await asyncio.to_thread(response.close)  # as Django's ASGI handler does, from a thread
    assert deliveries.only().outcome == CLIENT_DISCONNECT


def test_middleware_is_hybrid() -> None:
    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    from asgiref.sync import iscoroutinefunction

    assert DeliveryMiddleware.sync_capable and DeliveryMiddleware.async_capable
    assert iscoroutinefunction(DeliveryMiddleware(async_view))
    assert not iscoroutinefunction(DeliveryMiddleware(lambda r: HttpResponse()))


def test_lowercase_method_is_labelled_like_django_serves_it(deliveries: Deliveries) -> None:
    assert Client().generic("get", "/small/").status_code == 200
    assert deliveries.only().method == "GET"


def test_body_written_in_parts_is_counted_without_joining(deliveries: Deliveries) -> None:
    response = HttpResponse()
    for part in (b"abc", b"defg", b"", b"h" * 1000):
        response.write(part)

    def view(request: HttpRequest) -> HttpResponse:
        return response

    returned = DeliveryMiddleware(view)(RequestFactory().get("/small/"))
    assert returned is response
    assert len(response._container) == 5  # nothing joined the parts (b"" + 4 writes)
    b"".join(response)
    response.close()
    delivery = deliveries.only()
    assert (delivery.outcome, delivery.bytes_sent) == (DELIVERED, 1007)


@pytest.mark.parametrize(
    ("env", "excluded"),
    [
        ({"OTEL_PYTHON_DJANGO_EXCLUDED_URLS": "small/$,health"}, True),
        ({"OTEL_PYTHON_EXCLUDED_URLS": r"testserver/sm"}, True),
        (
            {"OTEL_PYTHON_DJANGO_EXCLUDED_URLS": "other", "OTEL_PYTHON_EXCLUDED_URLS": "small"},
            False,
        ),
        ({"OTEL_PYTHON_DJANGO_EXCLUDED_URLS": "small/x"}, False),
        ({}, False),
    ],
)
def test_django_instrumentation_exclusions_are_honoured(
    env: dict[str, str], excluded: bool, deliveries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What opentelemetry-instrumentation-django leaves without a server span (its variables,
    its rules: regular expressions searched in the URL without the query) is not tracked."""
    from django_sent_otel import pipeline

    monkeypatch.delenv("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", raising=False)
    monkeypatch.delenv("OTEL_PYTHON_EXCLUDED_URLS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pipeline.reset()
    try:
        Client().get("/small/?health=1")
        Client().get("/articles/2020/")
    finally:
        monkeypatch.undo()
        pipeline.reset()
    routes = [d.route for d in deliveries]
    assert routes == (["articles/<int:year>/"] if excluded else ["small/", "articles/<int:year>/"])


class _FakeUwsgi:
    """Stands in for the ``uwsgi`` module uWSGI provides inside its workers."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def connection_fd(self) -> int:
        return self.fd


def _loopback_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def _wait_readable(sock: socket.socket) -> None:
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    assert poller.poll(5000), "the client's close never reached the server socket"


@pytest.mark.parametrize(
    ("client_closes", "outcome"),
    [("reset", CLIENT_DISCONNECT), ("half-close", DELIVERED), ("stays", DELIVERED)],
)
def test_uwsgi_reset_connection_is_a_disconnect(
    deliveries: Deliveries,
    monkeypatch: pytest.MonkeyPatch,
    client_closes: str,
    outcome: str,
) -> None:
    """uWSGI raises no write error into the application: close() asks the request's socket.

    A reset (RST) is a hang-up; a client that read everything and closed (FIN) is not.
    """
    client, server = _loopback_pair()
    try:
        if client_closes == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            _wait_readable(server)
        elif client_closes == "half-close":
            client.shutdown(socket.SHUT_WR)
            _wait_readable(server)
        monkeypatch.setitem(sys.modules, "uwsgi", _FakeUwsgi(server.fileno()))
        assert Client().get("/small/").status_code == 200
    finally:
        client.close()
        server.close()
    d = deliveries.only()
    assert (d.outcome, d.route) == (outcome, "small/")


def test_first_byte_and_chunks_of_a_wsgi_stream(deliveries: Deliveries) -> None:
    """Under WSGI the first chunk the server takes from the body marks the first byte."""
    response = Client().get("/wait-first/")
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    response.close()
    (d,) = deliveries
    assert d.outcome == "delivered"
    assert d.time_to_first_byte is not None
    assert views.FIRST_BYTE_WAIT <= d.time_to_first_byte <= d.duration
    assert (d.chunks, d.bytes_sent) == (views.EVENTS, len(body))


def test_first_byte_of_a_body_in_memory_is_the_handler_return(deliveries: Deliveries) -> None:
    Client().get("/small/")
    (d,) = deliveries
    assert d.chunks == 1
    assert d.time_to_first_byte is not None
    assert d.time_to_first_byte == pytest.approx(d.duration - d.send_duration, abs=1e-6)


def test_text_chunks_count_the_bytes_the_server_gets(deliveries: Deliveries) -> None:
    """A view may stream text: counted as the bytes Django makes of it, not characters."""

    def view(request: Any) -> StreamingHttpResponse:
        return StreamingHttpResponse(iter(["héllo", memoryview(b"ab"), 7]))

    request = RequestFactory().get("/text/")
    response = DeliveryMiddleware(view)(request)
    body = b"".join(response)
    response.close()
    (d,) = deliveries
    assert body == "héllo".encode() + b"ab" + b"7"
    assert (d.bytes_sent, d.chunks) == (len(body), 3)
