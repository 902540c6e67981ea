"""Knowing the client left while the work runs: the tracker's moment, the watcher, the API.

Real sockets on loopback (TCP pairs), the real watcher thread; no mocks. The real-server
matrix is tests/servers/test_seen.py.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import RequestFactory
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import django_sent_otel
from django_sent_otel.delivery import CLIENT_DISCONNECT, TRACKER_ATTR, Tracker
from django_sent_otel.metrics import DeliveryMetrics, MetricsSink
from django_sent_otel.watcher import Watcher, get_watcher, socket_gone
from tests.harness.names import sample
from tests.harness.waiting import wait_for

#: Generous for a loaded two-core machine; the goal (and the measured median) is far lower.
BOUND = 1.0


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Connected TCP pairs (server side, client side) on loopback, closed at the end."""
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def tcp_pair(
    made: list[tuple[socket.socket, socket.socket]],
) -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    made.append((server, client))
    return server, client


def rst(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Abandoned:
    """A sink that records the abandoned seconds it is told."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def handler_returned(self, tracker: Tracker) -> None:
        pass

    def finished(self, tracker: Tracker) -> None:
        pass

    def abandoned(self, tracker: Tracker, seconds: float) -> None:
        self.seconds.append(seconds)


# The tracker


def test_client_left_runs_the_callbacks_once_in_order() -> None:
    tracker = Tracker("GET")
    calls: list[str] = []
    assert tracker.add_leave_callback(lambda: calls.append("a"))
    assert tracker.add_leave_callback(lambda: calls.append("b"))
    assert tracker.disconnected_at is None
    assert tracker.client_left(at=12.5)
    assert not tracker.client_left()
    assert calls == ["a", "b"]
    assert tracker.disconnected_at == 12.5


def test_a_callback_registered_after_the_client_left_runs_at_once() -> None:
    tracker = Tracker("GET")
    tracker.client_left()
    calls: list[int] = []
    assert tracker.add_leave_callback(lambda: calls.append(1))
    assert calls == [1]


def test_a_raising_callback_is_logged_once_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> None:
        raise RuntimeError("callback bug")

    calls: list[int] = []
    with caplog.at_level(logging.DEBUG, "django_sent_otel"):
        for _ in range(2):
            tracker = Tracker("GET")
            tracker.add_leave_callback(broken)
            tracker.add_leave_callback(lambda: calls.append(1))
            tracker.client_left()
    assert calls == [1, 1]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "on_disconnect callback" in errors[0].getMessage()


def test_never_after_delivery() -> None:
    tracker = Tracker("GET")
    calls: list[int] = []
    tracker.add_leave_callback(lambda: calls.append(1))
    tracker.handler_returned("r/", 200)
    tracker.finish()
    assert not tracker.client_left()  # a client that read everything, then closed
    assert not tracker.add_leave_callback(lambda: calls.append(2))
    assert calls == [] and tracker.disconnected_at is None


def test_a_disconnect_outcome_is_the_moment_known_gone() -> None:
    tracker = Tracker("GET")
    tracker.handler_returned("r/", 200)
    tracker.finish(CLIENT_DISCONNECT, at=5.0)
    assert tracker.disconnected_at == 5.0
    calls: list[int] = []
    assert tracker.add_leave_callback(lambda: calls.append(1))  # gone: runs at once
    assert calls == [1]


def test_abandoned_work_is_told_once_from_the_moment_known_gone() -> None:
    sink = Abandoned()
    tracker = Tracker("GET", sinks=(sink,))
    tracker.work_stopped(at=3.0)  # nobody left: nothing to count
    tracker.client_left(at=1.0)
    tracker.finish(CLIENT_DISCONNECT, at=1.0)  # the ASGI wrapper decides at once ...
    tracker.work_stopped(at=3.5)  # ... the sync view returns later
    tracker.work_stopped(at=9.0)
    assert sink.seconds == [2.5]


def test_the_abandoned_work_counter() -> None:
    metrics = DeliveryMetrics(registry=None)
    tracker = Tracker("GET", sinks=(MetricsSink(metrics, tracing=False),))
    tracker.handler_returned("report/", 200)
    tracker.client_left(at=tracker.started_at)
    tracker.finish(CLIENT_DISCONNECT, at=tracker.started_at + 1.0)
    tracker.work_stopped(at=tracker.started_at + 1.25)
    (family,) = [m for m in metrics.collect() if m.name == "django_http_abandoned_work_seconds"]
    samples = [(s.name, s.labels, s.value) for s in family.samples if s.name.endswith("_total")]
    assert samples == [
        ("django_http_abandoned_work_seconds_total", {"method": "GET", "route": "report/"}, 1.25)
    ]


# The watcher, on real sockets


def _watched(watcher: Watcher, sock: socket.socket) -> threading.Event:
    gone = threading.Event()
    assert watcher.add(sock.fileno(), gone.set) is not None
    return gone


@pytest.mark.parametrize("how", ["reset", "close", "half-close"])
def test_the_watcher_sees_the_client_leave(
    pairs: list[tuple[socket.socket, socket.socket]], how: str
) -> None:
    server, client = tcp_pair(pairs)
    gone = _watched(get_watcher(), server)
    assert not gone.wait(0.05)
    if how == "reset":
        rst(client)
    elif how == "close":
        client.close()
    else:
        client.shutdown(socket.SHUT_WR)
    assert gone.wait(BOUND), f"not seen within {BOUND} s"
    assert socket_gone(server.fileno())


def test_data_arriving_is_not_a_client_leaving(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    """A pipelined request or an upload still arriving wakes nothing (no busy loop)."""
    server, client = tcp_pair(pairs)
    gone = _watched(get_watcher(), server)
    client.sendall(b"GET /next/ HTTP/1.1\r\nHost: x\r\n\r\n")
    client.sendall(b"u" * 100_000)
    assert not gone.wait(0.2)
    assert not socket_gone(server.fileno())
    client.close()
    assert gone.wait(BOUND)


def test_a_removed_connection_is_not_reported(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    watcher = get_watcher()
    server, client = tcp_pair(pairs)
    gone = threading.Event()
    watch = watcher.add(server.fileno(), gone.set)
    assert watch is not None
    watcher.remove(watch)
    watcher.remove(watch)  # harmless twice
    client.close()
    assert not gone.wait(0.2)


def test_a_probe_is_asked_until_it_answers() -> None:
    answers = iter([False, False, True])
    gone = threading.Event()
    assert get_watcher().add_probe(lambda: next(answers), gone.set) is not None
    assert gone.wait(BOUND)


def test_thousands_of_watched_connections_cost_the_watcher_no_cpu(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    """2000 watched connections in flight, idle for 0.5 s: the watcher sleeps in epoll. Then
    all clients leave: each is reported once, promptly."""
    watcher = Watcher()
    count = 2000
    events = [_watched(watcher, tcp_pair(pairs)[0]) for _ in range(count)]
    assert watcher.watched == count
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.5)  # measuring idle CPU: nothing to wait for
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.1, f"{cpu:.3f} s of CPU while {count} connections were watched and idle"
    started = time.monotonic()
    for _, client in pairs:
        client.close()
    for gone in events:
        assert gone.wait(max(0.0, 5.0 - (time.monotonic() - started)))
    wait_for(lambda: watcher.watched == 0, 5.0, what="every connection forgotten")


def test_a_forked_child_gets_its_own_watcher(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    parent = get_watcher()
    server, client = tcp_pair(pairs)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new watcher, working
        code = 1
        try:
            child = get_watcher()
            gone = _watched(child, server)
            client.shutdown(socket.SHUT_RDWR)  # the parent holds the descriptor too
            code = 0 if child is not parent and gone.wait(BOUND * 5) else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"\x00"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


# The public API


def test_untracked_requests(rf: RequestFactory) -> None:
    request = rf.get("/")
    assert not django_sent_otel.is_disconnected(request)
    assert not django_sent_otel.on_disconnect(request, lambda: None)
    with pytest.raises(TypeError):
        django_sent_otel.on_disconnect(request, "not callable")  # type: ignore[arg-type]


def test_a_wsgi_request_on_a_real_connection(
    rf: RequestFactory, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    """gunicorn's environ key: ``on_disconnect`` watches, ``is_disconnected`` reads."""
    from django_sent_otel.middleware import _Tracked

    server, client = tcp_pair(pairs)
    request = rf.get("/", **{"gunicorn.socket": server})
    tracker = _Tracked("GET", (), None, request)
    request.__dict__[TRACKER_ATTR] = tracker
    assert not django_sent_otel.is_disconnected(request)  # asked of the socket: still there
    gone = threading.Event()
    assert django_sent_otel.on_disconnect(request, gone.set)
    assert tracker.unwatch is not None
    rst(client)
    assert gone.wait(BOUND)
    assert django_sent_otel.is_disconnected(request)
    tracker.finish(CLIENT_DISCONNECT)
    assert tracker.unwatch is None


def test_is_disconnected_asks_the_socket_when_nobody_watches(
    rf: RequestFactory, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    from django_sent_otel.middleware import _Tracked

    server, client = tcp_pair(pairs)
    request = rf.get("/", **{"gunicorn.socket": server})
    request.__dict__[TRACKER_ATTR] = _Tracked("GET", (), None, request)
    client.close()
    wait_for(lambda: django_sent_otel.is_disconnected(request), BOUND, what="seen gone")


# The docs


README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE_VIEWS = Path(__file__).resolve().parents[1] / "example" / "views.py"


def _between(text: str, name: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    assert start in text and end in text, f"README.md lacks the {start} / {end} markers"
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def test_readme_shows_the_seen_table_and_the_figures() -> None:
    from tests.servers.seen import render_figures, render_table

    text = README.read_text(encoding="utf-8")
    assert _between(text, "seen") == render_table().strip(), (
        "README.md's 'Seen while the view runs' table is out of date: paste "
        "tests.servers.seen.render_table()"
    )
    assert _between(text, "abandoned") == render_figures().strip()


def test_readme_code_is_the_example_code() -> None:
    """The section's code is the example project's, which real-server tests run."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Knowing the client left while the work runs", 1)[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    views = EXAMPLE_VIEWS.read_text(encoding="utf-8")
    shown = [block for block in blocks if block.startswith("def ")]
    assert shown
    for block in shown:
        for function in block.split("\n\n\n"):
            assert function.strip() in views, f"not in example/views.py:\n{function}"


# Under the ASGI wrapper, in process: a sync view Django cannot cancel


async def test_a_sync_view_under_asgi_stops_when_told(
    deliveries: list[Any],
    registry: CollectorRegistry,
    spans: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    """``http.disconnect`` reaches the wrapper through Django's listener while the sync view
    runs in its thread: the view sees it, the outcome and the span say when, and the seconds
    it kept working are counted once the application returned."""
    from django_sent_otel._names import DISCONNECTED_AT_ATTRIBUTE
    from django_sent_otel.asgi import get_asgi_application
    from tests.test_asgi import serve
    from tests.views import LEAVE_SECONDS

    marker = tmp_path / "started"
    started = time.monotonic()
    await serve(
        get_asgi_application(), f"/leave/?marker={marker}", disconnect_after_bytes=0, marker=marker
    )
    assert time.monotonic() - started < LEAVE_SECONDS / 2, "the view ran on"
    (delivery,) = deliveries
    assert (delivery.outcome, delivery.route) == (CLIENT_DISCONNECT, "leave/")
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    left = span.attributes[DISCONNECTED_AT_ATTRIBUTE]
    assert isinstance(left, float) and 0 < left <= delivery.duration + 1e-6
    abandoned = sample(
        registry, "django_http_abandoned_work_seconds_total", method="GET", route="leave/"
    )
    assert 0 < abandoned < BOUND


def test_a_client_that_read_the_whole_body_did_not_leave_early(
    rf: RequestFactory, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    """Once the view returned a body in memory the work is done: the watch stops, and a
    client closing before the server called ``close()`` runs no callback."""
    from django.http import HttpResponse

    from django_sent_otel.middleware import _returned, _Tracked

    server, client = tcp_pair(pairs)
    request = rf.get("/", **{"gunicorn.socket": server})
    tracker = _Tracked("GET", (), None, request)
    request.__dict__[TRACKER_ATTR] = tracker
    calls: list[int] = []
    assert django_sent_otel.on_disconnect(request, lambda: calls.append(1))
    _returned(request, HttpResponse(b"done"), tracker)
    assert tracker.unwatch is None
    client.close()
    assert not tracker.client_left()
    assert calls == []


def test_a_connection_watched_again_without_being_removed(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    """A watch never removed (a response the server never closed) is replaced by the next
    request's on the same kept-alive connection, and by a new connection's that got the same
    descriptor number: the later one is reported, once."""
    watcher = Watcher()
    number = 900  # a descriptor number of the test's choosing, free in this process
    first_server, first_client = tcp_pair(pairs)
    os.dup2(first_server.fileno(), number)
    first_server.close()
    first, second, third = threading.Event(), threading.Event(), threading.Event()
    assert watcher.add(number, first.set) is not None
    assert watcher.add(number, second.set) is not None  # kept alive, watched again
    os.close(number)  # the kernel forgets the registration of a closed descriptor
    first_client.close()
    server, client = tcp_pair(pairs)
    os.dup2(server.fileno(), number)  # a new connection under the old number
    try:
        assert watcher.add(number, third.set) is not None
        client.shutdown(socket.SHUT_RDWR)
        assert third.wait(BOUND)
    finally:
        os.close(number)
    assert not first.is_set() and not second.is_set()
