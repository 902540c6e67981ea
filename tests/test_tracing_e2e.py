"""Real servers exporting OTLP/HTTP protobuf to a real receiver: the ``response-delivered`` span.

Two set-ups, each under gunicorn (sync, 1 worker) and uvicorn (``tests.asgi:application``):

- ``sdk``: the project configures the SDK itself (``tests.settings_otel``): TracerProvider,
  ``BatchSpanProcessor(OTLPSpanExporter())`` and ``DjangoInstrumentor().instrument()``.
- ``auto``: the server runs under ``opentelemetry-instrument`` with only ``OTEL_*`` variables and
  no tracing code; the ``DeliveryMiddleware`` is not in ``MIDDLEWARE`` either, so the package's
  ``opentelemetry_instrumentor`` entry point has to insert it after Django's.

Each request carries a unique ``?e2e=`` marker: the Django server span is found by it (its URL
attributes), then the ``response-delivered`` span by trace id. Every wait polls the receiver's
condition variable with a deadline.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import views
from tests.harness import clients, servers
from tests.harness.otlp import OTLPReceiver, ReceivedSpan
from tests.views import SMALL_BODY, STREAM_SIZE

pytestmark = pytest.mark.servers

SPAN_NAME = "response-delivered"
SERVICE = "sent-otel-e2e"
SPAN_TIMEOUT = 20.0
ABORT_AFTER = 16 * 1024
EXPORT_FAILURE_TIMEOUT = 20.0
OUR_LOG_MARKERS = ("django_sent_otel", "django-sent-otel")


def otel_env(endpoint: str, mode: str, **extra: str) -> dict[str, str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings_otel",
        "SENT_OTEL_E2E_MODE": mode,
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
    }
    env.update(extra)
    return env


def instrument_command() -> str:
    """``opentelemetry-instrument`` of the interpreter running the tests."""
    candidate = Path(sys.executable).with_name("opentelemetry-instrument")
    found = str(candidate) if candidate.exists() else shutil.which("opentelemetry-instrument")
    if not found:
        pytest.fail("opentelemetry-instrument (opentelemetry-distro) is not installed")
    return found


class InstrumentedServer(servers.Server):
    """A harness server whose command runs under ``opentelemetry-instrument``."""

    def start(self) -> servers.Server:
        original = servers.command
        prefix = [instrument_command()]

        def command(*args: Any, **kwargs: Any) -> list[str]:
            return [*prefix, *original(*args, **kwargs)]

        servers.command = command  # only for the duration of this start()
        try:
            return super().start()
        finally:
            servers.command = original


def start_server(kind: str, mode: str, endpoint: str, **extra_env: str) -> servers.Server:
    cls = InstrumentedServer if mode == "auto" else servers.Server
    server = cls(kind, env=otel_env(endpoint, mode, **extra_env), ready_path="/metrics")
    return server.start()


def closed_port_endpoint() -> str:
    """An OTLP endpoint nobody listens on (a port that was free a moment ago)."""
    return f"http://127.0.0.1:{servers.free_port()}"


def marked(path: str) -> tuple[str, str]:
    marker = uuid.uuid4().hex
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}e2e={marker}", marker


def mentions(span: ReceivedSpan, marker: str) -> bool:
    return any(isinstance(v, str) and marker in v for v in span.attributes.values())


@dataclass
class Pair:
    server: ReceivedSpan
    ours: ReceivedSpan


def spans_for(otlp: OTLPReceiver, marker: str) -> Pair:
    """The Django server span of the request with ``marker`` and its response-delivered span."""
    (server_span,) = otlp.wait_for(
        lambda s: s.kind == "SERVER" and mentions(s, marker), timeout=SPAN_TIMEOUT
    )
    trace_id = server_span.trace_id
    (ours,) = otlp.wait_for(
        lambda s: s.name == SPAN_NAME and s.trace_id == trace_id, timeout=SPAN_TIMEOUT
    )
    return Pair(server_span, ours)


def our_log_lines(server: servers.Server) -> list[str]:
    text = server.log_text()
    return [line for line in text.splitlines() if any(m in line for m in OUR_LOG_MARKERS)]


def assert_child_of_server_span(pair: Pair) -> None:
    ours, server_span = pair.ours, pair.server
    assert ours.name == SPAN_NAME
    assert ours.kind == "INTERNAL"
    assert ours.trace_id == server_span.trace_id
    assert ours.parent_span_id == server_span.span_id, (ours.short(), server_span.short())
    assert ours.start_time_unix_nano >= server_span.start_time_unix_nano
    assert ours.end_time_unix_nano >= ours.start_time_unix_nano
    assert ours.resource.get("service.name") == SERVICE


@pytest.fixture(scope="module")
def otlp() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


SETUPS = [
    pytest.param(("sdk", "gunicorn-sync"), id="sdk-gunicorn-sync"),
    pytest.param(("sdk", "uvicorn"), id="sdk-uvicorn"),
    pytest.param(("auto", "gunicorn-sync"), id="auto-gunicorn-sync"),
    pytest.param(("auto", "uvicorn"), id="auto-uvicorn"),
]
SETUP_IDS = [p.id for p in SETUPS]


@dataclass
class Running:
    mode: str
    server: servers.Server


@pytest.fixture(scope="module", params=SETUPS)
def running(request: pytest.FixtureRequest, otlp: OTLPReceiver) -> Iterator[Running]:
    """One server per set-up, shared by the tests of this module (spans are told apart by
    the request's marker, never by order)."""
    mode, kind = request.param
    started = start_server(kind, mode, otlp.endpoint)
    try:
        yield Running(mode, started)
    finally:
        started.stop()


@pytest.fixture
def server(running: Running) -> servers.Server:
    return running.server


def stream_path(kind: str) -> str:
    return "/stream/" if kind in servers.WSGI_KINDS else "/astream/"


def test_small_response_span(running: Running, otlp: OTLPReceiver) -> None:
    server = running.server
    path, marker = marked("/articles/2024/")
    response = clients.full_read(server.port, path)
    assert response.status == 200 and response.complete
    pair = spans_for(otlp, marker)
    assert_child_of_server_span(pair)
    attributes = dict(pair.ours.attributes)
    first_byte = attributes.pop("django_sent_otel.response.time_to_first_byte")
    assert isinstance(first_byte, float) and first_byte >= 0
    assert attributes == {
        "http.request.method": "GET",
        "http.route": "articles/<int:year>/",
        "http.response.status_code": 200,
        "http.response.body.size": response.body_len,
        "django_sent_otel.response.chunks": 1,
        "django_sent_otel.delivery.outcome": "delivered",
    }
    assert pair.ours.status_code == "UNSET"
    # The same SDK (resource) made both spans; under opentelemetry-instrument it is the distro's.
    assert pair.ours.resource == pair.server.resource
    assert ("telemetry.auto.version" in pair.ours.resource) == (running.mode == "auto")
    assert our_log_lines(server) == []


def test_streamed_response_span(server: servers.Server, otlp: OTLPReceiver) -> None:
    path, marker = marked(stream_path(server.kind))
    response = clients.full_read(server.port, path)
    assert response.status == 200 and response.complete
    assert response.body_len == STREAM_SIZE
    pair = spans_for(otlp, marker)
    assert_child_of_server_span(pair)
    attributes = pair.ours.attributes
    assert attributes["http.response.body.size"] == STREAM_SIZE
    assert attributes["django_sent_otel.response.chunks"] == views.CHUNKS
    assert attributes["django_sent_otel.response.time_to_first_byte"] >= 0
    assert attributes["django_sent_otel.delivery.outcome"] == "delivered"
    assert "error.type" not in attributes
    assert pair.ours.status_code == "UNSET"


def test_aborted_stream_is_an_error_span(server: servers.Server, otlp: OTLPReceiver) -> None:
    path, marker = marked(stream_path(server.kind))
    aborted = clients.abort_after(server.port, path, ABORT_AFTER)
    assert aborted.status == 200 and not aborted.complete
    pair = spans_for(otlp, marker)
    assert_child_of_server_span(pair)
    ours = pair.ours
    assert ours.status_code == "ERROR", ours.short()
    assert ours.status_message
    assert ours.attributes["error.type"] == "client_disconnect"
    assert ours.attributes["django_sent_otel.delivery.outcome"] == "client_disconnect"
    assert ours.attributes["http.route"] == stream_path(server.kind).strip("/") + "/"
    assert ABORT_AFTER <= ours.attributes["http.response.body.size"] <= STREAM_SIZE
    assert server.running
    assert our_log_lines(server) == []


def test_incoming_traceparent_is_honoured(server: servers.Server, otlp: OTLPReceiver) -> None:
    trace_id = uuid.uuid4().hex
    parent_id = uuid.uuid4().hex[:16]
    path, marker = marked("/small/")
    response = clients.full_read(
        server.port, path, headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
    )
    assert response.status == 200
    pair = spans_for(otlp, marker)
    assert pair.server.trace_id == trace_id
    assert pair.server.parent_span_id == parent_id
    assert_child_of_server_span(pair)
    assert pair.ours.attributes["http.response.body.size"] == len(SMALL_BODY)


# -- the OTLP endpoint is down -------------------------------------------------------------------

#: Paths fetched with the endpoint up and down; bodies must be byte-identical.
BODY_PATHS_WSGI = ("/small/", "/articles/2024/", "/big/", "/stream/", "/file/", "/empty/")
BODY_PATHS_ASGI = ("/small/", "/articles/2024/", "/big/", "/astream/", "/async-small/", "/empty/")


def fetch_all(server: servers.Server) -> dict[str, tuple[int, int, str]]:
    paths = BODY_PATHS_WSGI if server.kind in servers.WSGI_KINDS else BODY_PATHS_ASGI
    seen = {}
    for path in paths:
        response = clients.full_read(server.port, path, keep_body=True)
        assert response.complete, path
        body = response.body or b""
        seen[path] = (response.status, len(body), hashlib.sha256(body).hexdigest())
    return seen


def exporter_failed(server: servers.Server) -> bool:
    return "spans batch" in server.log_text()


@pytest.mark.parametrize(("mode", "kind"), [p.values[0] for p in SETUPS], ids=SETUP_IDS)
def test_endpoint_down_changes_nothing(otlp: OTLPReceiver, mode: str, kind: str) -> None:
    up = start_server(kind, mode, otlp.endpoint)
    try:
        bodies_up = fetch_all(up)
        assert our_log_lines(up) == []
    finally:
        up.stop()

    down = start_server(kind, mode, closed_port_endpoint(), OTEL_EXPORTER_OTLP_TIMEOUT="1")
    try:
        bodies_down = fetch_all(down)
        # Keep serving until the exporter has really tried and failed (bounded), then again.
        deadline = time.monotonic() + EXPORT_FAILURE_TIMEOUT
        while not exporter_failed(down):
            assert time.monotonic() < deadline, f"no export failure logged\n{down.log_tail()}"
            assert clients.full_read(down.port, "/small/").status == 200
            time.sleep(0.05)  # polling interval of the condition above
        assert fetch_all(down) == bodies_down
        assert down.running
        log_lines = our_log_lines(down)
    finally:
        down.stop()
    assert bodies_down == bodies_up
    assert log_lines == [], log_lines
