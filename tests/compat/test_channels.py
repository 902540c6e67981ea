"""Channels' ``ProtocolTypeRouter`` inside the delivery wrapper, under daphne and uvicorn.

A real websocket exchange runs next to real HTTP requests on the same server
(``tests.compat.asgi_channels``): the websocket scope reaches the consumer without the plugin's
tracker and leaves no delivery record, while every HTTP response next to it is tracked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from django_sent_otel.middleware import SCOPE_KEY
from tests.harness import clients
from tests.harness.records import Record, by_test_id, read_records, wait_for_records
from tests.harness.servers import Server
from tests.harness.websocket import WebSocket
from tests.servers.accuracy import EXPECTED
from tests.views import SMALL_BODY, STREAM_SIZE

pytestmark = pytest.mark.servers

APP = "tests.compat.asgi_channels:application"
RECORD_TIMEOUT = 60.0


@dataclass
class Running:
    kind: str
    server: Server
    record: Path

    def delivery(self, test_id: str) -> Record:
        try:
            (record,) = wait_for_records(self.record, 1, RECORD_TIMEOUT, select=by_test_id(test_id))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.server.log_tail(60)}") from None
        return record


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp(f"channels-{request.param}")
    record = workdir / "records.jsonl"
    server = Server(request.param, app=APP, record=record, log_dir=workdir)
    with server:
        yield Running(request.param, server, record)


def exchange(ws: WebSocket, text: str) -> dict[str, object]:
    ws.send_text(text)
    answer = json.loads(ws.receive_text())
    assert answer["echo"] == text, answer
    return answer


def test_websocket_scope_is_untouched(running: Running) -> None:
    with WebSocket(running.server.port, "/ws/echo/") as ws:
        answer = exchange(ws, "hello")
        assert answer["type"] == "websocket"
        assert answer["path"] == "/ws/echo/"
        assert answer["tracked"] is False
        assert SCOPE_KEY not in answer["keys"]  # type: ignore[operator]
        assert "url_route" in answer["keys"]  # type: ignore[operator]  # Channels' URLRouter ran
        exchange(ws, "again")
    assert ws.close_code == 1000
    # An HTTP request after the websocket closed: once its record is there, a record of the
    # websocket (written in the same process before it) would be there too.
    after = clients.full_read(running.server.port, "/small/")
    assert running.delivery(after.test_id)["outcome"] == "delivered"
    assert not [r for r in read_records(running.record) if r.get("test_id") == ws.test_id]


def test_http_next_to_an_open_websocket_is_tracked(running: Running) -> None:
    port = running.server.port
    with WebSocket(port, "/ws/echo/") as ws:
        exchange(ws, "before")
        small = clients.full_read(port, "/small/")
        assert small.status == 200 and small.body_len == len(SMALL_BODY)
        record = running.delivery(small.test_id)
        assert (record["outcome"], record["route"], record["bytes_sent"]) == (
            "delivered",
            "small/",
            len(SMALL_BODY),
        )
        streamed = clients.full_read(port, "/astream/")
        assert streamed.status == 200 and streamed.body_len == STREAM_SIZE
        record = running.delivery(streamed.test_id)
        assert (record["outcome"], record["bytes_sent"]) == ("delivered", STREAM_SIZE), record
        aborted = clients.abort_after(port, "/astream/", 16384)
        assert aborted.status == 200 and not aborted.complete
        # What the outcome matrix accepts for this server (daphne buffers without
        # back-pressure: the body may be all handed over before the reset arrives).
        accepted = EXPECTED[running.kind]["astream/abort"].outcomes
        assert running.delivery(aborted.test_id)["outcome"] in accepted
        exchange(ws, "after")  # the websocket lived through all of it
    assert ws.close_code == 1000
