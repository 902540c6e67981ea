"""Streaming on real servers: time to first byte, how long clients stayed, true bytes.

Each server kind starts once (one process, so ``/metrics`` shows everything it recorded) and
serves three checks, read against the request's own delivery record:

- a stream whose first event takes ``FIRST_BYTE_WAIT`` puts its time to first byte into
  exactly the buckets at or above that value, once;
- a client that leaves a slow event stream after its first event lands in
  ``django_http_undelivered_duration_seconds`` with reason ``client_disconnect``, observed
  with the record's duration;
- (uvicorn, hypercorn) a 50 MB ``FileResponse`` aborted after 16 KB counts no more bytes
  than the client received plus what the socket buffers on both sides can hold: the server
  drops what Django sends after it saw the reset, and those bytes are not "handed over".
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import views
from tests.harness.clients import abort_after, full_read
from tests.harness.names import CLIENT_DISCONNECT, DELIVERED, TIME_TO_FIRST_BYTE
from tests.harness.names import UNDELIVERED_DURATION as UNDELIVERED
from tests.harness.records import Record, wait_for_records
from tests.harness.scrape import Scrape, scrape, wait_scrape
from tests.harness.servers import ASGI_KINDS, Server
from tests.harness.tools import need_binary
from tests.servers.conftest import RECORD_TIMEOUT, SERVER_MODULES

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

KINDS = ("gunicorn-sync", "gunicorn-gthread", "uvicorn", "hypercorn", "daphne", "granian-asgi")
#: Servers with back-pressure: the body waits for the client, so a reset stops the sends.
BACKPRESSURE = ("uvicorn", "hypercorn")
#: What a loopback connection can hold in flight besides what the client read: the client's
#: receive buffer, the server's send buffer (both at most the kernel's maximum) and the
#: server's own write buffer (asyncio's default high-water mark is 64 KiB; counted with a
#: margin for a message in flight).
SERVER_BUFFER = 1 << 20


def _kernel_max(name: str) -> int:
    return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[-1])


class Served:
    def __init__(self, kind: str, server: Server, record: Path) -> None:
        self.kind = kind
        self.server = server
        self.record = record
        self.asgi = kind in ASGI_KINDS

    def wait_record(self, test_id: str) -> Record:
        def mine(record: Record) -> bool:
            return record.get("test_id") == test_id and record.get("kind") == "signal"

        try:
            (record,) = wait_for_records(self.record, 1, RECORD_TIMEOUT, select=mine)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.server.log_tail(60)}") from None
        return record

    def scrape_until(self, name: str, count: float, **labels: str) -> Scrape:
        """Scrape until the histogram ``name`` has ``count`` observations for ``labels``."""
        return wait_scrape(
            self.server.port,
            lambda s: s.value(f"{name}_count", **labels) >= count,
            what=f"{name}{labels} to reach {count}",
            timeout=RECORD_TIMEOUT,
            log=lambda: self.server.log_tail(40),
        )


@pytest.fixture(scope="module", params=KINDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, big_file: str
) -> Iterator[Served]:
    kind: str = request.param
    if importlib.util.find_spec(SERVER_MODULES[kind]) is None:
        need_binary(None, f"{SERVER_MODULES[kind]} (for the {kind} server)")
    workdir = tmp_path_factory.mktemp(f"stream-{kind}")
    record = workdir / "records.jsonl"
    server = Server(
        kind, record=record, log_dir=workdir, env={"SENT_OTEL_TEST_FILE": big_file}
    ).start()
    try:
        yield Served(kind, server, record)
    finally:
        server.stop()


def _buckets(scraped: Scrape, name: str, **labels: str) -> dict[float, float]:
    found: dict[float, float] = {}
    for sample in scraped.samples:
        if sample.name == f"{name}_bucket":
            rest = {k: v for k, v in sample.labels.items() if k != "le"}
            if rest == labels:
                found[float(sample.labels["le"])] = float(sample.value)
    return found


def test_time_to_first_byte_lands_in_its_bucket(served: Served) -> None:
    path, route = (
        ("/await-first/", "await-first/") if served.asgi else ("/wait-first/", "wait-first/")
    )
    labels = {"method": "GET", "route": route}
    before = scrape(served.server.port)
    old = before.value(f"{TIME_TO_FIRST_BYTE}_count", **labels)
    response = full_read(served.server.port, path)
    assert (response.status, response.complete) == (200, True), response
    assert response.body_len == views.EVENTS * len(views.EVENT)
    record = served.wait_record(response.test_id)
    assert record["outcome"] == DELIVERED, record
    first = record["time_to_first_byte"]
    assert views.FIRST_BYTE_WAIT <= first <= record["duration"], record
    assert record["chunks"] == views.EVENTS, record

    after = served.scrape_until(TIME_TO_FIRST_BYTE, old + 1, **labels)
    old_buckets = _buckets(before, TIME_TO_FIRST_BYTE, **labels)
    grown = {
        le: count - old_buckets.get(le, 0.0)
        for le, count in _buckets(after, TIME_TO_FIRST_BYTE, **labels).items()
    }
    assert grown, after.lines(TIME_TO_FIRST_BYTE)
    # Exactly the buckets whose bound is at or above the observed value grew, by one.
    assert grown == {le: float(first <= le) for le in grown}, (first, grown)


def test_client_leaving_mid_stream_is_undelivered(served: Served) -> None:
    path, route = (
        ("/aslow-stream/", "aslow-stream/") if served.asgi else ("/slow-stream/", "slow-stream/")
    )
    labels = {"method": "GET", "route": route, "reason": CLIENT_DISCONNECT}
    before = scrape(served.server.port)
    old_count = before.value(f"{UNDELIVERED}_count", **labels)
    old_sum = before.value(f"{UNDELIVERED}_sum", **labels)
    left = abort_after(served.server.port, path, len(views.EVENT))
    assert left.status == 200 and not left.complete, left
    record = served.wait_record(left.test_id)
    assert record["outcome"] == CLIENT_DISCONNECT, record
    # The first event went out at once, before the client left.
    assert 0 <= record["time_to_first_byte"] <= record["duration"], record
    assert 1 <= record["chunks"] < views.SLOW_EVENTS, record

    after = served.scrape_until(UNDELIVERED, old_count + 1, **labels)
    assert after.value(f"{UNDELIVERED}_count", **labels) == old_count + 1
    observed = after.value(f"{UNDELIVERED}_sum", **labels) - old_sum
    assert observed == pytest.approx(record["duration"], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("served", BACKPRESSURE, indirect=True)
def test_aborted_file_counts_only_what_the_server_took(served: Served) -> None:
    aborted = abort_after(served.server.port, "/file/", 16384, rcvbuf=65536)
    assert aborted.status == 200 and not aborted.complete, aborted
    record = served.wait_record(aborted.test_id)
    assert record["outcome"] == CLIENT_DISCONNECT, record
    size = views.expected_body_size("file")
    bound = (
        aborted.body_received + _kernel_max("tcp_rmem") + _kernel_max("tcp_wmem") + SERVER_BUFFER
    )
    assert bound < size, "the socket buffers alone could hold the whole file: no test"
    assert record["bytes_sent"] <= bound, (record, aborted, bound)
