"""The real-server outcome matrix: every server x view x client behaviour, one record each.

Each server kind starts once (``servers.get(kind)``, see conftest), serves its cells from
``accuracy.EXPECTED`` over loopback sockets, and stops; its last cell ("after-stop") re-reads
the record file after the stop to prove that no request left a second record.
Run: ``python -m pytest tests/servers -q`` (under a minute on two cores, per Django version).
"""

from __future__ import annotations

import itertools
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import views
from tests.harness.clients import abort_after, abort_while_running, full_read, keep_alive_pair
from tests.harness.docs import between, page
from tests.harness.records import Record, wait_for_records
from tests.servers.accuracy import (
    CUTS_CLEANLY,
    DELIVERED,
    DISCONNECT,
    ERROR_500,
    EXPECTED,
    KEEPS_ALIVE,
    NO_RECORD,
    STREAM_ERROR,
    TABLES,
    VIEWS,
    ZERO_COPY,
    Expect,
    ok,
    render_table,
)
from tests.servers.conftest import RECORD_TIMEOUT, Running, ServerPool

pytestmark = pytest.mark.timeout(600)

ERROR_BODY_MAX = views.ERROR_CHUNKS * len(views.CHUNK)
#: A daphne connection hangs after a body error: stop reading after this long without data.
ERROR_STALL = 3.0

#: Checks that are not part of the accuracy table, run on some servers after their cells.
EXTRA_CELLS = {
    "gunicorn-sync": ["metrics"],
    "uvicorn": ["metrics"],
    "gunicorn-gthread": ["mixed-200"],
    "gunicorn-gevent": ["async-overlap"],
    "nginx-gunicorn": ["full-x20"],
}
#: Each server's cells in order: the matrix, the extra checks, then "after-stop" (which stops
#: the server and re-reads its records), all in one test function so that they run in this
#: order, one server at a time (see ``ServerPool``).
CELLS = [
    pytest.param(kind, cell, id=f"{kind}:{cell}")
    for kind, cells in EXPECTED.items()
    for cell in [*cells, *EXTRA_CELLS.get(kind, []), "after-stop"]
]


_SIZED = {"small", "async-small", "big", "stream", "astream", "file", "slow", "aslow"}


def body_size(view: str) -> int:
    return views.expected_body_size(view) if view in _SIZED else -1


def check_outcome(server: Running, cell: str, record: Record, expect: Expect) -> None:
    assert record["outcome"] in expect.outcomes, (
        f"{server.kind} {cell}: outcome {record['outcome']!r}, expected one of "
        f"{sorted(map(str, expect.outcomes))}; record: {record}\n{server.server.log_tail(30)}"
    )
    assert record["reason"] == (None if record["outcome"] == DELIVERED else record["outcome"])
    assert 0 <= record["send_duration"] <= record["duration"] + 1e-6, record


def check_request(record: Record, view: str, method: str = "GET") -> None:
    spec = VIEWS[view]
    assert (record["method"], record["route"]) == (method, spec.route), record


def full_cell(server: Running, view: str, expect: Expect) -> None:
    spec = VIEWS[view]
    cell = f"{view}/full"
    if view == "error-stream":
        response = full_read(server.port, spec.path, stall=ERROR_STALL)
        # 0: daphne hangs before sending the headers; 500: the server had not sent them yet.
        assert response.status in ((0, 200, 500) if server.kind in ERROR_500 else (0, 200))
        # runserver delimits a streaming body by closing the connection: a cut body looks
        # complete to the client; so does a server that ends the chunked body cleanly. Every
        # other server makes it visibly incomplete.
        if response.status == 500:
            assert server.kind in ERROR_500, response
        elif server.kind in CUTS_CLEANLY:
            assert response.body_len == ERROR_BODY_MAX, response
        else:
            assert not response.complete or response.framing == "close", response
    else:
        response = full_read(server.port, spec.path)
        assert (response.status, response.complete) == (spec.status, True), response
    if NO_RECORD in expect.outcomes:
        server.expect(response.test_id, 0)
        return  # proven after the server stopped: no record at all
    server.expect(response.test_id, callback=view == "callback")
    record = server.wait_record(response.test_id)
    check_outcome(server, cell, record, expect)
    check_request(record, view)
    assert record["status_code"] == spec.status, record
    if view == "error-stream":
        if response.status == 200:
            assert response.body_len <= record["bytes_sent"] <= ERROR_BODY_MAX, (record, response)
    else:
        assert record["bytes_sent"] == response.body_len, (record, response)
        if view in _SIZED:
            assert response.body_len == body_size(view)
    if view in ("slow", "aslow"):
        assert record["duration"] >= views.SLOW_SECONDS * 0.9, record
    if view == "file":
        if server.kind in ZERO_COPY:
            assert record["file_reads"] == 0, f"sendfile was not used: {record}"
        else:
            assert record["file_reads"] is not None and record["file_reads"] > 0, record
    if view == "callback":
        callback = server.wait_record(response.test_id, kind="callback")
        fields = ("outcome", "route", "status_code", "bytes_sent", "duration")
        assert {k: callback[k] for k in fields} == {k: record[k] for k in fields}


def abort_cell(server: Running, view: str, expect: Expect) -> None:
    spec = VIEWS[view]
    aborted = abort_after(server.port, spec.path, 16384)
    assert aborted.status == 200, aborted
    if view != "small":
        assert not aborted.complete, f"the whole body arrived before the abort: {aborted}"
    server.expect(aborted.test_id)
    record = server.wait_record(aborted.test_id)
    check_outcome(server, f"{view}/abort", record, expect)
    check_request(record, view)
    assert record["status_code"] == 200
    assert record["bytes_sent"] <= body_size(view), record
    if record["outcome"] == DELIVERED:
        assert record["bytes_sent"] == body_size(view), record
    if view == "file" and server.kind in ZERO_COPY:
        assert record["file_reads"] == 0, f"sendfile was not used: {record}"


def early_cell(server: Running, view: str, expect: Expect) -> None:
    marker = server.workdir / f"marker-{uuid.uuid4().hex}"
    aborted = abort_while_running(server.port, VIEWS[view].path, marker)
    server.expect(aborted.test_id)
    record = server.wait_record(aborted.test_id)
    check_outcome(server, f"{view}/early", record, expect)
    check_request(record, view)
    # The view was running: the record comes once Django is done with the request.
    assert record["duration"] > 0


def head_cell(server: Running, view: str, expect: Expect) -> None:
    response = full_read(server.port, VIEWS[view].path, method="HEAD")
    assert (response.status, response.body_len) == (200, 0), response
    server.expect(response.test_id)
    record = server.wait_record(response.test_id)
    check_outcome(server, f"{view}/head", record, expect)
    check_request(record, view, "HEAD")
    assert (record["status_code"], record["bytes_sent"]) == (200, 0), record


def keep_alive_cell(server: Running, view: str, expect: Expect) -> None:
    pair = keep_alive_pair(server.port, VIEWS[view].path)
    if server.kind in KEEPS_ALIVE:
        assert pair.reused, f"{server.kind} did not keep the connection alive"
    for response in (pair.first, pair.second):
        assert (response.status, response.complete) == (200, True), response
        server.expect(response.test_id)
    for response in (pair.first, pair.second):
        record = server.wait_record(response.test_id)
        check_outcome(server, f"{view}/keep-alive", record, expect)
        check_request(record, view)
        assert record["bytes_sent"] == response.body_len == body_size(view), record


RUNNERS = {
    "full": full_cell,
    "abort": abort_cell,
    "early": early_cell,
    "head": head_cell,
    "keep-alive": keep_alive_cell,
}


def metrics_is_not_recorded(server: Running) -> None:
    response = full_read(server.port, "/metrics")
    assert response.status == 200
    assert b"django_http_responses_delivered_total" in (
        full_read(server.port, "/metrics", keep_body=True).body or b""
    )
    server.expect(response.test_id, 0)  # checked after the stop, with every other request


MIXED = [
    ("full", "small"),
    ("full", "articles"),
    ("full", "stream"),
    ("full", "empty"),
    ("full", "not-modified"),
    ("full", "callback"),
    ("full", "async-small"),
    ("head", "stream"),
    ("abort", "stream"),
    ("abort", "big"),
]


def two_hundred_mixed_requests_two_hundred_records(server: Running) -> None:
    def one(job: tuple[str, str]) -> tuple[str, str, str]:
        scenario, view = job
        path = VIEWS[view].path
        if scenario == "abort":
            return abort_after(server.port, path).test_id, scenario, view
        method = "HEAD" if scenario == "head" else "GET"
        return full_read(server.port, path, method).test_id, scenario, view

    jobs = list(itertools.islice(itertools.cycle(MIXED), 200))
    with ThreadPoolExecutor(max_workers=8) as pool:
        sent = list(pool.map(one, jobs, timeout=RECORD_TIMEOUT * 2))
    ids = {test_id: (scenario, view) for test_id, scenario, view in sent}
    assert len(ids) == 200
    for test_id, (_, view) in ids.items():
        server.expect(test_id, callback=view == "callback")

    def mine(record: Record) -> bool:
        return record.get("kind") == "signal" and record.get("test_id") in ids

    records = wait_for_records(server.record, 200, RECORD_TIMEOUT * 2, select=mine)
    assert len(records) == 200
    assert len({r["test_id"] for r in records}) == 200
    expected = {"full": DELIVERED, "head": DELIVERED, "abort": DISCONNECT}
    wrong = [
        (ids[r["test_id"]], r["outcome"])
        for r in records
        if r["outcome"] != expected[ids[r["test_id"]][0]]
    ]
    assert not wrong, wrong
    assert len({r["pid"] for r in records}) >= 1


def test_docs_show_the_accuracy_table() -> None:
    shown = between(page("delivered"), "accuracy")
    assert shown.strip() == render_table().strip(), (
        "docs/delivered.md's accuracy table is out of date; paste "
        "tests.servers.accuracy.render_table()"
    )


def test_expected_outcomes_are_known() -> None:
    known = {DELIVERED, DISCONNECT, STREAM_ERROR, NO_RECORD}
    shown = [kind for servers in TABLES for kind in servers]
    assert sorted(shown) == sorted(EXPECTED), "every server is shown once in the docs"
    for kind, cells in EXPECTED.items():
        for cell, expect in cells.items():
            assert expect.outcomes <= known, (kind, cell)
            assert expect.outcomes, (kind, cell)
            if expect.race:
                assert expect.note, f"{kind} {cell}: a race needs a note"


def one_record_per_request_after_stop(server: Running) -> None:
    server.stop()
    server.check_one_record_each()
    assert not server.plugin_log_lines(), (
        f"django-sent-otel logged on {server.kind}:\n" + "\n".join(server.plugin_log_lines())
    )


def async_body_while_an_async_view_runs(server: Running) -> None:
    """gunicorn gevent: a second async_to_sync on the worker fails while another runs.

    The gevent worker runs every request on one OS thread; while an async view runs in
    asgiref's event loop, Django's async_to_sync for an async body raises RuntimeError ("You
    cannot use AsyncToSync in the same thread as an async event loop"). The client gets
    gunicorn's 500 instead of the stream: the plugin must record that body as failed, and
    the view that was running as delivered.
    """
    marker = server.workdir / f"marker-{uuid.uuid4().hex}"
    path = f"{VIEWS['aslow'].path}?marker={marker}"
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(full_read, server.port, path)
        deadline = time.monotonic() + RECORD_TIMEOUT
        while not marker.exists():
            assert time.monotonic() < deadline, "the async view did not start"
            assert not running.done(), running.result()
            time.sleep(0.01)
        overlapped = full_read(server.port, VIEWS["astream"].path)
        slow = running.result(timeout=RECORD_TIMEOUT)
    assert (overlapped.status, overlapped.complete) == (500, True), overlapped
    assert (slow.status, slow.complete) == (200, True), slow
    for response in (overlapped, slow):
        server.expect(response.test_id)
    record = server.wait_record(overlapped.test_id)
    assert (record["outcome"], record["bytes_sent"]) == (STREAM_ERROR, 0), record
    assert server.wait_record(slow.test_id)["outcome"] == DELIVERED


def twenty_full_reads_behind_nginx(server: Running) -> None:
    """With buffering on, nginx takes the whole body from gunicorn (sendfile, or a chunked
    stream ending with its terminator) before it can close the upstream connection, so a
    full read is never a failure: twenty full reads of the 50 MB file and of an async
    stream, each recorded delivered with every byte counted."""
    for view in ("file", "astream"):
        for _ in range(20):
            response = full_read(server.port, VIEWS[view].path)
            assert (response.status, response.complete) == (200, True), response
            server.expect(response.test_id)
            record = server.wait_record(response.test_id)
            check_outcome(server, f"{view}/full", record, ok(DELIVERED))
            assert record["bytes_sent"] == response.body_len == body_size(view), record


CHECKS = {
    "async-overlap": async_body_while_an_async_view_runs,
    "full-x20": twenty_full_reads_behind_nginx,
    "metrics": metrics_is_not_recorded,
    "mixed-200": two_hundred_mixed_requests_two_hundred_records,
    "after-stop": one_record_per_request_after_stop,
}


@pytest.mark.servers
@pytest.mark.parametrize(("kind", "cell"), CELLS)
def test_cell(servers: ServerPool, kind: str, cell: str) -> None:
    server = servers.get(kind)
    if cell in CHECKS:
        CHECKS[cell](server)
        return
    view, scenario = cell.rsplit("/", 1)
    RUNNERS[scenario](server, view, EXPECTED[kind][cell])
