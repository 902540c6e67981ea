"""opentelemetry-instrumentation-django next to the plugin, in either middleware order.

Real gunicorn servers export OTLP/HTTP to the project's receiver (``tests.settings_otel``, SDK
set up in code). Theirs first (what ``DjangoInstrumentor`` does by itself, and what the docs
asks for): the ``response-delivered`` span is a child of the Django server span. Ours first
(``tests.compat.wsgi_otel_ours_first``): the plugin's middleware returns after theirs has ended
and detached the server span, so the delivery span starts a trace of its own (or continues the
caller's ``traceparent``, the one context left); outcomes are right either way, and their
server span is the same in both orders.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from django_sent_otel.tracing import OUTCOME_ATTRIBUTE
from tests.harness import clients
from tests.harness.otlp import OTLPReceiver, ReceivedSpan
from tests.harness.records import Record, by_test_id, wait_for_records
from tests.harness.servers import Server
from tests.test_tracing_e2e import SPAN_NAME, SPAN_TIMEOUT, otel_env
from tests.views import STREAM_SIZE

pytestmark = pytest.mark.servers

RECORD_TIMEOUT = 60.0
THEIRS_FIRST = "theirs-first"
OURS_FIRST = "ours-first"
APPS = {THEIRS_FIRST: None, OURS_FIRST: "tests.compat.wsgi_otel_ours_first:application"}


@dataclass
class Running:
    order: str
    server: Server
    record: Path

    def delivery(self, test_id: str) -> Record:
        (record,) = wait_for_records(self.record, 1, RECORD_TIMEOUT, select=by_test_id(test_id))
        return record


@pytest.fixture(scope="module")
def otlp() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module", params=[THEIRS_FIRST, OURS_FIRST])
def running(
    request: pytest.FixtureRequest, otlp: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    order = request.param
    workdir = tmp_path_factory.mktemp(order)
    record = workdir / "records.jsonl"
    server = Server(
        "gunicorn-sync",
        app=APPS[order],
        record=record,
        log_dir=workdir,
        env=otel_env(otlp.endpoint, "sdk"),
    )
    with server:
        yield Running(order, server, record)


@dataclass
class Traced:
    response: clients.Response
    trace_id: str
    caller_span: str


def caller_context() -> tuple[str, str, dict[str, str]]:
    """A fresh caller's trace id and span id, and the W3C ``traceparent`` header carrying them."""
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, caller_span, {"traceparent": f"00-{trace_id}-{caller_span}-01"}


def traced_read(port: int, path: str) -> Traced:
    """A full read whose request continues a caller's trace."""
    trace_id, caller_span, headers = caller_context()
    return Traced(clients.full_read(port, path, headers=headers), trace_id, caller_span)


def spans_of(otlp: OTLPReceiver, trace_id: str) -> tuple[ReceivedSpan, ReceivedSpan]:
    """Their server span and our delivery span in the trace of one request."""
    found = otlp.wait_for(lambda s: s.trace_id == trace_id, count=2, timeout=SPAN_TIMEOUT)
    (theirs,) = [s for s in found if s.kind == "SERVER"]
    (ours,) = [s for s in found if s.name == SPAN_NAME]
    return theirs, ours


def outcome_of(span: ReceivedSpan) -> object:
    """The outcome attribute (the namespaced key is the only one)."""
    assert "delivery.outcome" not in span.attributes, span.short()
    return span.attributes.get(OUTCOME_ATTRIBUTE)


def check_parents(running: Running, theirs: ReceivedSpan, ours: ReceivedSpan, caller: str) -> None:
    assert theirs.parent_span_id == caller, theirs.short()  # their span continues the caller
    if running.order == THEIRS_FIRST:
        assert ours.parent_span_id == theirs.span_id, (ours.short(), theirs.short())
    else:
        # Their middleware ended and detached the server span before ours saw the response:
        # ours falls back to the request's propagated context, a sibling of the server span.
        assert ours.parent_span_id == caller, (ours.short(), theirs.short())
    assert ours.kind == "INTERNAL"
    assert ours.start_time_unix_nano >= theirs.start_time_unix_nano


def test_delivered_response(running: Running, otlp: OTLPReceiver) -> None:
    traced = traced_read(running.server.port, "/articles/2024/")
    assert traced.response.status == 200 and traced.response.complete
    theirs, ours = spans_of(otlp, traced.trace_id)
    # Their server span is the same in both orders.
    assert theirs.attributes.get("http.route") == "articles/<int:year>/"
    assert theirs.name == "GET articles/<int:year>/"
    assert theirs.status_code == "UNSET"
    check_parents(running, theirs, ours, traced.caller_span)
    assert outcome_of(ours) == "delivered"
    assert ours.attributes["http.route"] == "articles/<int:year>/"
    assert ours.attributes["http.response.body.size"] == traced.response.body_len
    record = running.delivery(traced.response.test_id)
    assert (record["outcome"], record["route"]) == ("delivered", "articles/<int:year>/")


def test_streamed_response(running: Running, otlp: OTLPReceiver) -> None:
    traced = traced_read(running.server.port, "/stream/")
    assert traced.response.status == 200 and traced.response.body_len == STREAM_SIZE
    theirs, ours = spans_of(otlp, traced.trace_id)
    check_parents(running, theirs, ours, traced.caller_span)
    assert outcome_of(ours) == "delivered"
    assert ours.attributes["http.response.body.size"] == STREAM_SIZE
    # Their span ends when the view returns; ours when the last byte was handed over.
    assert ours.end_time_unix_nano >= theirs.end_time_unix_nano
    record = running.delivery(traced.response.test_id)
    assert (record["outcome"], record["bytes_sent"]) == ("delivered", STREAM_SIZE)


def test_server_error(running: Running, otlp: OTLPReceiver) -> None:
    traced = traced_read(running.server.port, "/crash/")
    assert traced.response.status == 500
    theirs, ours = spans_of(otlp, traced.trace_id)
    assert theirs.status_code == "ERROR", theirs.short()  # their exception handling intact
    check_parents(running, theirs, ours, traced.caller_span)
    assert outcome_of(ours) == "delivered"
    assert ours.attributes["http.response.status_code"] == 500
    record = running.delivery(traced.response.test_id)
    assert (record["outcome"], record["status_code"]) == ("delivered", 500)


def test_aborted_stream(running: Running, otlp: OTLPReceiver) -> None:
    trace_id, caller_span, headers = caller_context()
    aborted = clients.abort_after(running.server.port, "/stream/", 16384, headers=headers)
    assert aborted.status == 200 and not aborted.complete
    theirs, ours = spans_of(otlp, trace_id)
    check_parents(running, theirs, ours, caller_span)
    assert outcome_of(ours) == "client_disconnect"
    assert ours.status_code == "ERROR"
    assert running.delivery(aborted.test_id)["outcome"] == "client_disconnect"
