"""Faults: client aborts, slow readers, failing bodies and a broken plugin, on real servers.

- 500 mid-body aborts (RST after 16 KB) spread over ``stream/``, ``big/`` and ``file/`` on
  gunicorn: exactly 500 ``client_disconnect`` failures, one record per request, none delivered.
- Slow readers (64 KB, a short pause, 64 KB...) through a small receive buffer: delivered.
- ``error-stream/``: ``stream_error``.
- Every recording path of the plugin broken on purpose (``settings_faulty``: metrics sink, span
  processor, signal receiver, ``on_delivered`` callback) and, separately, the OTLP exporter
  pointed at a closed port (``settings_otlp_down``), on gunicorn and uvicorn: clients receive
  byte-for-byte what a clean server sends, the server keeps serving, the plugin logs its errors
  and the server reports no more application errors than the clean one (the ones of the
  ``error-stream/`` view itself).

Run: ``python -m pytest tests/hardening/test_faults.py -q -s`` (prints the figures).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings

from tests import views
from tests.hardening.support import server_error_reports, start
from tests.harness.clients import Abort, Seen, SlowRead, abort_after, full_read, slow_read, sweep
from tests.harness.data import ensure_big_file
from tests.harness.names import CLIENT_DISCONNECT, DELIVERED, STREAM_ERROR
from tests.harness.records import Record, read_records, wait_for_records
from tests.harness.scrape import Outcomes, difference, multiprocess_scrape, scrape, total
from tests.harness.servers import Server, free_port
from tests.harness.waiting import wait_for

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

ABORTS = 500
ABORT_PATHS = ("/stream/", "/big/", "/file/")
ABORT_CONCURRENCY = 8
ABORT_DEADLINE = 180.0
RECORD_TIMEOUT = 60.0
ROUTES = {"/stream/": "stream/", "/big/": "big/", "/file/": "file/", "/small/": "small/"}

#: What the identity checks request: every shape of the test project, HEAD, a 404.
SWEEP = [
    *(
        ("GET", path)
        for path in (
            "/small/",
            "/big/",
            "/stream/",
            "/astream/",
            "/file/",
            "/articles/2024/",
            "/empty/",
            "/not-modified/",
            "/callback/",
            "/async-small/",
            "/crash/",
            "/error-stream/",
            "/no/such/page/",
        )
    ),
    ("HEAD", "/small/"),
    ("HEAD", "/stream/"),
]
#: Requests sent after the sweeps, to show the server keeps serving.
AFTERWARDS = 40


@pytest.fixture(scope="module")
def big_file() -> str:
    return ensure_big_file(settings.SENT_OTEL_TEST_FILE)


@dataclass
class Gunicorn:
    server: Server
    workdir: Path
    issued: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def records_path(self) -> Path:
        return self.workdir / "records.jsonl"

    def records(self, ids: set[str]) -> list[Record]:
        return wait_for_records(
            self.records_path,
            len(ids),
            RECORD_TIMEOUT,
            select=lambda r: r["kind"] == "signal" and r["test_id"] in ids,
        )


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory, big_file: str) -> Iterator[Gunicorn]:
    """A clean gunicorn (gthread, 2 workers, multiprocess metrics, records) for the module."""
    workdir = tmp_path_factory.mktemp("faults-gunicorn")
    server = start(
        "gunicorn-gthread", workdir, multiprocess_dir=True, big_file=big_file, record=True
    )
    try:
        yield Gunicorn(server, workdir)
    finally:
        server.stop()


def test_mid_body_aborts_each_counted_once(gunicorn: Gunicorn) -> None:
    before = settled_outcomes(gunicorn)
    deadline = time.monotonic() + ABORT_DEADLINE
    started = time.monotonic()
    with ThreadPoolExecutor(ABORT_CONCURRENCY) as pool:
        futures = [
            (path, pool.submit(abort_after, gunicorn.port, path, 16384, timeout=30))
            for path in (ABORT_PATHS[i % len(ABORT_PATHS)] for i in range(ABORTS))
        ]
        aborts: list[tuple[str, Abort]] = [
            (path, future.result(timeout=max(1.0, deadline - time.monotonic())))
            for path, future in futures
        ]
    elapsed = time.monotonic() - started
    for _, abort in aborts:
        gunicorn.issued[abort.test_id] += 1
    cut = [(path, a) for path, a in aborts if a.status != 200 or a.complete]
    assert not cut, f"{len(cut)} responses were not cut mid-body: {cut[:5]}"

    ids = {a.test_id for _, a in aborts}
    assert len(ids) == ABORTS
    records = gunicorn.records(ids)
    per_id = collections.Counter(r["test_id"] for r in records)
    assert len(records) == ABORTS and set(per_id.values()) == {1}, per_id.most_common(3)
    path_of = {a.test_id: path for path, a in aborts}
    wrong = [r for r in records if r["outcome"] != CLIENT_DISCONNECT]
    assert not wrong, f"{len(wrong)} aborts not recorded as client_disconnect: {wrong[:5]}"
    assert all(r["route"] == ROUTES[path_of[r["test_id"]]] for r in records)

    expected = collections.Counter((ROUTES[path], "200", CLIENT_DISCONNECT) for path, _ in aborts)
    wait_for(
        lambda: total(difference(scrape(gunicorn.port).outcomes(), before)) >= ABORTS,
        RECORD_TIMEOUT,
        what=f"{ABORTS} more outcomes in /metrics",
    )
    counted = difference(scrape(gunicorn.port).outcomes(), before)
    print(
        f"\n[faults] {ABORTS} mid-body aborts ({ABORT_CONCURRENCY} at a time, {elapsed:.1f}s): "
        f"/metrics +{total(counted, 'client_disconnect')} client_disconnect, "
        f"+{total(counted, 'delivered')} delivered; {len(records)} records"
    )
    assert counted == expected, f"/metrics counted {counted}, expected {expected}"


def test_slow_readers_are_delivered(gunicorn: Gunicorn) -> None:
    paths = ["/stream/", "/big/", "/file/", "/stream/"]
    started = time.monotonic()
    with ThreadPoolExecutor(len(paths)) as pool:
        reads: list[SlowRead] = list(pool.map(lambda p: slow_read(gunicorn.port, p), paths))
    elapsed = time.monotonic() - started
    for read in reads:
        gunicorn.issued[read.test_id] += 1
    assert all(r.status == 200 and r.complete for r in reads), reads
    records = {r["test_id"]: r for r in gunicorn.records({r.test_id for r in reads})}
    for path, read in zip(paths, reads, strict=True):
        record = records[read.test_id]
        assert record["outcome"] == DELIVERED, (path, record)
        assert record["bytes_sent"] == views.expected_body_size(path.strip("/")), record
    print(
        f"\n[faults] {len(reads)} slow readers ({[r.pauses for r in reads]} pauses, "
        f"{elapsed:.1f}s): all delivered"
    )


def settled_outcomes(gunicorn: Gunicorn) -> Outcomes:
    """The outcomes once every request issued so far is in /metrics (multiprocess workers
    write their counts every half second)."""
    issued = sum(gunicorn.issued.values())

    def settled() -> tuple[Outcomes] | None:
        outcomes = scrape(gunicorn.port).outcomes()
        return (outcomes,) if total(outcomes) >= issued else None

    return wait_for(settled, RECORD_TIMEOUT, what=f"{issued} earlier outcomes in /metrics")[0]


def test_error_stream_is_a_stream_error(gunicorn: Gunicorn) -> None:
    before = settled_outcomes(gunicorn)
    responses = [full_read(gunicorn.port, "/error-stream/", stall=5.0) for _ in range(5)]
    for response in responses:
        gunicorn.issued[response.test_id] += 1
    assert all(r.status == 200 and not r.complete for r in responses)
    records = gunicorn.records({r.test_id for r in responses})
    assert {r["outcome"] for r in records} == {"stream_error"}, records
    wait_for(
        lambda: total(difference(scrape(gunicorn.port).outcomes(), before)) >= len(responses),
        RECORD_TIMEOUT,
        what="the stream errors in /metrics",
    )
    counted = difference(scrape(gunicorn.port).outcomes(), before)
    assert counted == {("error-stream/", "200", STREAM_ERROR): len(responses)}, counted


@pytest.mark.last_in_module
def test_after_stop_every_request_recorded_once(gunicorn: Gunicorn) -> None:
    """Stop the module's server: no request of this module left a second record late, and the
    multiprocess files hold the same totals as the records."""
    gunicorn.server.stop()
    records = [r for r in read_records(gunicorn.records_path) if r["kind"] == "signal"]
    per_id = collections.Counter(r["test_id"] for r in records)
    assert per_id == gunicorn.issued, {
        k: (per_id[k], gunicorn.issued[k])
        for k in per_id.keys() | gunicorn.issued.keys()
        if per_id[k] != gunicorn.issued[k]
    }
    by_outcome = collections.Counter(
        (r["route"], str(r["status_code"]), r["outcome"]) for r in records
    )
    assert multiprocess_scrape(gunicorn.workdir / "prometheus").outcomes() == by_outcome


# Identity: a broken plugin changes nothing for clients.


@dataclass(frozen=True)
class Reference:
    seen: dict[tuple[str, str], Seen]
    server_errors: int


_references: dict[str, Reference] = {}


def reference(kind: str, workdir: Path, big_file: str) -> Reference:
    """What a clean server of ``kind`` sends for two sweeps (computed once per kind)."""
    if kind not in _references:
        server = start(kind, workdir / f"clean-{kind}", big_file=big_file, record=False)
        try:
            first = sweep(server.port, SWEEP)
            second = sweep(server.port, SWEEP)
        finally:
            server.stop()
        assert first == second, "the clean server is not deterministic"
        _references[kind] = Reference(first, server_error_reports(server.log_text()))
    return _references[kind]


def check_keeps_serving(port: int) -> None:
    for _ in range(AFTERWARDS):
        response = full_read(port, "/small/", keep_body=True)
        assert response.status == 200 and response.body == views.SMALL_BODY, response


def compare(kind: str, ref: Reference, *sweeps: dict[tuple[str, str], Seen]) -> None:
    for seen in sweeps:
        different = {k: (ref.seen[k], v) for k, v in seen.items() if ref.seen[k] != v}
        assert not different, f"{kind}: responses differ from a clean server: {different}"


# A deliberate baseline of the repetition check: this test and the next open alike (a work
# directory, a clean reference server, then the faulty one); each test reads as a whole.
@pytest.mark.parametrize("kind", ["gunicorn-gthread", "uvicorn"])
def test_broken_recording_path_changes_nothing_for_clients(
    kind: str, tmp_path_factory: pytest.TempPathFactory, big_file: str
) -> None:
    workdir = tmp_path_factory.mktemp(f"faulty-{kind}")
    ref = reference(kind, workdir, big_file)
    server = start(kind, workdir, settings="tests.hardening.settings_faulty", big_file=big_file)
    try:
        first = sweep(server.port, SWEEP)
        second = sweep(server.port, SWEEP)
        check_keeps_serving(server.port)
        tracked = 2 * len(SWEEP) + AFTERWARDS
        # The later sinks still run when earlier ones raise: the recorder's receiver saw all.
        records = wait_for_records(
            workdir / "records.jsonl",
            tracked,
            RECORD_TIMEOUT,
            select=lambda r: r["kind"] == "signal",
        )
    finally:
        server.stop()
    compare(kind, ref, first, second)
    assert len(records) == tracked
    log = server.log_text()
    for expected in (
        "django-sent-otel: MetricsSink.finished failed",
        "django-sent-otel: TracingSink.finished failed",
        "django-sent-otel: on_delivered callback",
        "Error calling raising_receiver in Signal.send_robust()",
    ):
        assert expected in log, f"{kind}: {expected!r} not logged\n{server.log_tail(80)}"
    errors = server_error_reports(log)
    print(
        f"\n[faults] {kind} with every sink broken: {2 * len(SWEEP)} responses identical to a "
        f"clean server, {AFTERWARDS} more served; server error reports {errors} "
        f"(clean server: {ref.server_errors}, the error-stream/ view's own)"
    )
    assert errors == ref.server_errors, f"{kind}: the server reported application errors"


@pytest.mark.parametrize("kind", ["gunicorn-gthread", "uvicorn"])
def test_unreachable_otlp_endpoint_changes_nothing_for_clients(
    kind: str, tmp_path_factory: pytest.TempPathFactory, big_file: str
) -> None:
    workdir = tmp_path_factory.mktemp(f"otlp-down-{kind}")
    ref = reference(kind, workdir, big_file)
    endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"  # nothing listens there
    server = start(
        kind,
        workdir,
        settings="tests.hardening.settings_otlp_down",
        big_file=big_file,
        record=False,
        env={"SENT_OTEL_HARDENING_OTLP_ENDPOINT": endpoint},
    )
    try:
        first = sweep(server.port, SWEEP)
        with ThreadPoolExecutor(4) as pool:  # more spans than the exporter queue holds
            list(pool.map(lambda _: check_keeps_serving(server.port), range(4)))
        second = sweep(server.port, SWEEP)
        wait_for(
            lambda: (
                "Failed to export" in server.log_text() or "Transient error" in server.log_text()
            ),
            30,
            what="the SDK to report the failed export",
        )
    finally:
        started = time.monotonic()
        server.stop()
        stop_seconds = time.monotonic() - started
    compare(kind, ref, first, second)
    errors = server_error_reports(server.log_text())
    print(
        f"\n[faults] {kind} exporting to a closed port: {2 * len(SWEEP)} responses identical to "
        f"a clean server, {4 * AFTERWARDS} more served; server error reports {errors} (clean "
        f"{ref.server_errors}); stopped in {stop_seconds:.1f}s"
    )
    assert errors == ref.server_errors
