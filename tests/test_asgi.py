"""The ASGI wrapper in process, driven through the ASGI protocol by hand."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.test import override_settings
from prometheus_client import CollectorRegistry

from django_sent_otel import signals
from django_sent_otel.asgi import DeliveryASGIMiddleware, get_asgi_application
from django_sent_otel.delivery import Delivery, sending
from tests import views
from tests.harness.asgi import scope, serve
from tests.harness.names import CLIENT_DISCONNECT, DELIVERED, SENDING, STREAM_ERROR, sample

pytestmark = pytest.mark.usefixtures("registry")


async def test_delivered_through_wrapper(
    deliveries: list[Delivery], registry: CollectorRegistry
) -> None:
    app = get_asgi_application()
    in_flight = sending()  # other tests' trackers still open (the count is per process)
    _sent, received = await serve(app, "/small/")
    (d,) = deliveries
    assert (d.outcome, d.route, d.status_code, d.bytes_sent) == (
        DELIVERED,
        "small/",
        200,
        received,
    )
    assert sample(registry, SENDING) == in_flight


async def test_disconnect_mid_stream(deliveries: list[Delivery]) -> None:
    app = get_asgi_application()
    _, _received = await serve(app, "/astream/", disconnect_after_bytes=16384)
    (d,) = deliveries
    assert (d.outcome, d.route) == (CLIENT_DISCONNECT, "astream/")
    assert 16384 <= d.bytes_sent < 200 * 65536


async def test_first_byte_and_chunks_of_a_stream(deliveries: list[Delivery]) -> None:
    """The first body message marks the first byte (after the view's wait); every body
    message with bytes is a chunk; the empty final one is neither."""
    sent, received = await serve(get_asgi_application(), "/await-first/")
    (d,) = deliveries
    assert d.outcome == DELIVERED
    assert d.time_to_first_byte is not None
    assert views.FIRST_BYTE_WAIT <= d.time_to_first_byte <= d.duration
    assert d.chunks == views.EVENTS == sum(1 for m in sent if m.get("body"))
    assert d.bytes_sent == received == views.EVENTS * len(views.EVENT)


async def test_first_byte_of_a_bodiless_response_is_its_headers(
    deliveries: list[Delivery],
) -> None:
    await serve(get_asgi_application(), "/empty/")
    (d,) = deliveries
    assert (d.status_code, d.chunks, d.bytes_sent) == (204, 0, 0)
    assert d.time_to_first_byte is not None and d.time_to_first_byte <= d.duration


async def test_no_first_byte_when_the_client_left_during_the_view(
    deliveries: list[Delivery], tmp_path: Any
) -> None:
    marker = tmp_path / "started"
    await serve(
        get_asgi_application(), f"/aslow/?marker={marker}", disconnect_after_bytes=0, marker=marker
    )
    (d,) = deliveries
    assert (d.outcome, d.time_to_first_byte, d.chunks) == (CLIENT_DISCONNECT, None, 0)


async def test_disconnect_while_view_runs(deliveries: list[Delivery], tmp_path: Any) -> None:
    app = get_asgi_application()
    marker = tmp_path / "started"
    sent, _ = await serve(app, f"/aslow/?marker={marker}", disconnect_after_bytes=0, marker=marker)
    (d,) = deliveries
    assert d.outcome == CLIENT_DISCONNECT
    assert d.route == "aslow/"
    assert not any(m["type"] == "http.response.body" for m in sent)


async def test_stream_error_escapes_unchanged(deliveries: list[Delivery]) -> None:
    app = get_asgi_application()
    # Django lets the body's exception escape the application; the wrapper re-raises it as is.
    with pytest.raises(RuntimeError, match="mid-stream"):
        await serve(app, "/error-stream/")
    await asyncio.gather(*signals._pending)
    (d,) = deliveries
    assert d.outcome == STREAM_ERROR


async def test_exception_escaping_app_is_reraised(deliveries: list[Delivery]) -> None:
    class Boom(Exception):
        pass

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        raise Boom

    with pytest.raises(Boom):
        await serve(DeliveryASGIMiddleware(app), "/x")
    await asyncio.gather(*signals._pending)
    (d,) = deliveries
    assert (d.outcome, d.route, d.bytes_sent) == (STREAM_ERROR, "unmatched", 1)


async def test_app_returning_without_final_body(deliveries: list[Delivery]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    await serve(DeliveryASGIMiddleware(app), "/x")
    (d,) = deliveries
    assert (d.outcome, d.bytes_sent) == (CLIENT_DISCONNECT, 7)


async def test_disconnect_after_completion_is_not_a_failure(deliveries: list[Delivery]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        assert (await receive())["type"] == "http.disconnect"

    await serve(DeliveryASGIMiddleware(app), "/x")
    (d,) = deliveries
    assert d.outcome == DELIVERED


def _uvicorn_like_send(sent: list[dict[str, Any]], gone_after: int) -> Any:
    """A send() bound to an object of uvicorn's cycle class, whose ``disconnected`` turns True
    after ``gone_after`` body messages: from then on it drops messages, as uvicorn does."""

    class Transport:
        def is_closing(self) -> bool:
            return False

    cycle_class = type(
        "RequestResponseCycle", (), {"__module__": "uvicorn.protocols.http.h11_impl"}
    )
    cycle = cycle_class()
    cycle.disconnected = False
    cycle.transport = Transport()
    bodies = 0

    async def send(self: Any, message: dict[str, Any]) -> None:
        nonlocal bodies
        if self.disconnected:
            return
        sent.append(message)
        if message["type"] == "http.response.body":
            bodies += 1
            self.disconnected = bodies >= gone_after

    return types.MethodType(send, cycle)


async def test_bytes_after_the_server_saw_the_client_leave_are_not_counted(
    deliveries: list[Delivery],
) -> None:
    """A server that knows its client is gone drops the rest silently: the rest is neither
    bytes nor chunks handed over, and the response ends as a disconnect right there."""
    sent: list[dict[str, Any]] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    queue.put_nowait({"type": "http.request", "body": b"", "more_body": False})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(5):
            await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    await DeliveryASGIMiddleware(app)(scope("/x"), queue.get, _uvicorn_like_send(sent, 2))
    await asyncio.gather(*signals._pending)
    (d,) = deliveries
    assert (d.outcome, d.bytes_sent, d.chunks) == (CLIENT_DISCONNECT, 20, 2)
    assert d.time_to_first_byte is not None
    assert [m.get("body") for m in sent[1:]] == [b"0123456789"] * 2


async def test_disconnect_queued_before_the_final_message(deliveries: list[Delivery]) -> None:
    """A server that says nothing about its client (no ``client_gone_probe``) queued
    http.disconnect after the last body bytes, before the final message: every byte was
    handed over, the response is delivered; nothing waits for a disconnect before the final
    message (granian reports one while the body is still being sent by a client that read
    everything; uvicorn, hypercorn and daphne say so on their ``send``)."""
    sent: list[dict[str, Any]] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    queue.put_nowait({"type": "http.request", "body": b"", "more_body": False})

    async def plain_send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

        async def listen() -> None:
            await receive()  # Django's disconnect listener

        listener = asyncio.ensure_future(listen())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"all of it", "more_body": True})
        queue.put_nowait({"type": "http.disconnect"})
        await send({"type": "http.response.body", "body": b""})
        listener.cancel()

    await DeliveryASGIMiddleware(app)(scope("/x"), queue.get, plain_send)
    await asyncio.gather(*signals._pending)
    (d,) = deliveries
    assert (d.outcome, d.bytes_sent) == (DELIVERED, 9)
    assert sent[-1] == {"type": "http.response.body", "body": b""}


async def test_head_is_delivered_with_headers(deliveries: list[Delivery]) -> None:
    await serve(get_asgi_application(), "/stream/", method="HEAD")
    (d,) = deliveries
    assert (d.method, d.outcome) == ("HEAD", DELIVERED)


async def test_excluded_and_metrics_paths_untracked(deliveries: list[Delivery]) -> None:
    sent, _ = await serve(get_asgi_application(), "/metrics")
    assert sent[0]["status"] == 200
    assert deliveries == []


async def test_lifespan_and_websocket_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    wrapped = DeliveryASGIMiddleware(app)
    await wrapped({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    await wrapped({"type": "websocket", "path": "/ws"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket"]


def test_wrapper_wraps_djangos_handler() -> None:
    app = get_asgi_application()
    assert isinstance(app, DeliveryASGIMiddleware)
    assert isinstance(app.app, ASGIHandler)


async def test_exclusion_matches_the_path_below_root_path(deliveries: list[Delivery]) -> None:
    # The wrapper decides once, on the path_info Django will see (the path below root_path),
    # and hands that decision to the middleware.
    wrapped = DeliveryASGIMiddleware(_ok)
    for path in ("/app/metrics", "/app/small/"):
        await wrapped({**scope(path), "root_path": "/app"}, _request, _discard)
    await asyncio.gather(*signals._pending)
    assert [(d.outcome, d.bytes_sent) for d in deliveries] == [("delivered", 2)]


@pytest.mark.parametrize("script_name", [None, "", "/forced"])
@pytest.mark.parametrize("root_path", ["", "/app"])
async def test_exclusion_uses_djangos_script_prefix(
    deliveries: list[Delivery], script_name: str | None, root_path: str
) -> None:
    # The wrapper reads FORCE_SCRIPT_NAME once per runtime, not per request: what it tracks
    # must still follow Django's get_script_prefix(), also after the setting changed.
    wrapped = DeliveryASGIMiddleware(_ok)
    paths = ("/metrics", "/app/metrics", "/forced/metrics", "/app/small/")
    await wrapped(scope("/small/"), _request, _discard)  # the runtime built before the change
    with override_settings(FORCE_SCRIPT_NAME=script_name):
        expected = []
        for path in paths:
            request_scope = {**scope(path), "root_path": root_path}
            prefix = get_script_prefix(request_scope)
            path_info = path.removeprefix(prefix) if prefix else path
            if path_info != "/metrics":
                expected.append(path)
            await wrapped(request_scope, _request, _discard)
        await asyncio.gather(*signals._pending)
    assert 0 < len(expected) < len(paths)  # (tracked and excluded paths both occur)
    assert len(deliveries) == 1 + len(expected)


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An application answering 200 with a two-byte body."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok", "more_body": False})


async def _request() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: dict[str, Any]) -> None:
    return None
