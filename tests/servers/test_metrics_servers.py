"""The Prometheus metrics of real servers, scraped over HTTP from ``/metrics``.

Three servers, each started once for its class:

- gunicorn sync, 2 workers, ``PROMETHEUS_MULTIPROC_DIR`` and the package's ``on_starting`` /
  ``child_exit`` hooks (``tests/servers/gunicorn_multiproc.py``): a known mix of full reads and
  aborts gives exact counters per label set, histogram counts, sent bytes and an idle gauge of
  0; ``promtool check metrics`` accepts the exposition; a worker killed with SIGKILL in the
  middle of a download keeps its counters and drops its share of the in-flight gauge; a worker
  stopped with SIGTERM keeps its counters too.
- uvicorn (the package's ASGI wrapper, one process): the same exact-count check with a smaller
  mix (aborted async streams included), then 10,000 requests to random paths with junk methods
  over keep-alive connections add no label value beyond ``route="unmatched"`` /
  ``method="other"``.
- uvicorn with an OpenTelemetry SDK and a protected ``/metrics``
  (``tests/servers/settings_sdk.py``): an OpenMetrics scrape carries exemplars with the trace id
  of the request's ``traceparent``; the bearer token and the allowed networks answer 401 / 403 /
  200 to real clients (a second loopback address plays the outside network).

Every wait scrapes until a value is reached, with a deadline (a delivery is counted when the
server closes the response, a moment after the client's last byte).
"""

from __future__ import annotations

import collections
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import views
from tests.harness import scrape as sc
from tests.harness.clients import Abort, KeepAliveClient, Response, abort_after, full_read, reset
from tests.harness.names import CLIENT_DISCONNECT as DISCONNECT
from tests.harness.names import DELIVERED_TOTAL as DELIVERED
from tests.harness.names import DELIVERY_DURATION as DURATION
from tests.harness.names import FAILURES_TOTAL as FAILURES
from tests.harness.names import SEND_DURATION as SEND
from tests.harness.names import SENDING, STREAM_ERROR, TIME_TO_FIRST_BYTE
from tests.harness.names import SENT_BYTES_TOTAL as BYTES
from tests.harness.names import UNDELIVERED_DURATION as UNDELIVERED
from tests.harness.processes import children, socket_owner
from tests.harness.records import read_records, wait_for_records
from tests.harness.scrape import LabelKey, Scrape, label_key, scrape, wait_scrape
from tests.harness.servers import Server
from tests.harness.tools import need_binary
from tests.harness.waiting import wait_for
from tests.test_docs import documented_metrics

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

SDK_SETTINGS = "tests.servers.settings_sdk"

METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

#: Deadline for counters to reach the expected totals after the clients finished.
SETTLE_TIMEOUT = 30.0
ABORT_AFTER = 16 * 1024
MIX_THREADS = 4


# The traffic mixes and what they must produce


@dataclass(frozen=True)
class Call:
    """One request of a mix: ``full`` read or ``abort`` (RST after 16 KB of body)."""

    kind: str
    path: str
    route: str
    status: int = 200
    #: None: delivered; else the failure reason.
    reason: str | None = None
    #: Body bytes the view produces for a complete response.
    size: int = 0
    #: Body bytes the server is handed for this request when they differ from ``size``.
    sent: int | None = None


def full(path: str, route: str, size: int, status: int = 200) -> Call:
    return Call("full", path, route, status, None, size)


def abort(path: str, route: str, size: int) -> Call:
    return Call("abort", path, route, 200, DISCONNECT, size)


def error_stream(sent: int) -> Call:
    return Call("full", "/error-stream/", "error-stream/", 200, STREAM_ERROR, ERROR_BYTES, sent)


def articles(count: int, first_year: int) -> list[Call]:
    years = [first_year + 7 * i for i in range(count)]
    body = "articles of {}\n"
    return [full(f"/articles/{y}/", "articles/<int:year>/", len(body.format(y))) for y in years]


SMALL = len(views.SMALL_BODY)
STREAM = views.STREAM_SIZE
ERROR_BYTES = views.ERROR_CHUNKS * len(views.CHUNK)


def file_size() -> int:
    return views.expected_body_size("file")


def gunicorn_mix() -> list[Call]:
    """Aborts that gunicorn sync observes (research/server-behaviour.md): stream, big, file."""
    return [
        *[full("/small/", "small/", SMALL)] * 30,
        *articles(10, 1990),
        *[full("/stream/", "stream/", STREAM)] * 10,
        *[full("/empty/", "empty/", 0, status=204)] * 3,
        *[error_stream(sent=ERROR_BYTES)] * 3,
        *[abort("/stream/", "stream/", STREAM)] * 12,
        *[abort("/file/", "file/", file_size())] * 5,
        *[abort("/big/", "big/", views.BIG_SIZE)] * 3,
    ]


def uvicorn_mix() -> list[Call]:
    """uvicorn applies back-pressure: aborts of astream, stream and big are all observed."""
    return [
        *[full("/small/", "small/", SMALL)] * 10,
        *articles(5, 2001),
        *[full("/astream/", "astream/", STREAM)] * 5,
        *[full("/not-modified/", "not-modified/", 0, status=304)] * 2,
        # Under ASGI Django lists a sync iterator before the first body message: the error
        # comes before any body byte was handed over (research/server-behaviour.md, item 8).
        *[error_stream(sent=0)] * 2,
        *[abort("/astream/", "astream/", STREAM)] * 6,
        *[abort("/stream/", "stream/", STREAM)] * 3,
        *[abort("/big/", "big/", views.BIG_SIZE)] * 2,
    ]


@dataclass
class Expected:
    """The series a mix must leave, built from its calls and what the clients saw."""

    delivered: collections.Counter[LabelKey] = field(default_factory=collections.Counter)
    failures: collections.Counter[LabelKey] = field(default_factory=collections.Counter)
    #: (method, route) -> delivered responses (the histograms' ``_count``).
    observed: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    #: (method, route) -> exact body bytes, for routes whose requests all ran to their end.
    exact_bytes: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (method, route) -> (lowest, highest) body bytes, for routes with aborts.
    bytes_bounds: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    total: int = 0

    def routes(self) -> set[str]:
        return (
            {route for _, route in self.observed}
            | {r for _, r in self.exact_bytes}
            | {r for _, r in self.bytes_bounds}
        )


def run_mix(port: int, calls: list[Call], seed: int) -> Expected:
    """Send the calls in a shuffled order from a few threads; check what each client saw."""
    order = list(calls)
    random.Random(seed).shuffle(order)

    def send(call: Call) -> tuple[Call, Response | Abort]:
        if call.kind == "full":
            return call, full_read(port, call.path)
        return call, abort_after(port, call.path, ABORT_AFTER)

    with ThreadPoolExecutor(MIX_THREADS) as pool:
        results = list(pool.map(send, order, timeout=120))

    expected = Expected(total=len(calls))
    low: collections.Counter[tuple[str, str]] = collections.Counter()
    high: collections.Counter[tuple[str, str]] = collections.Counter()
    aborted: set[tuple[str, str]] = set()
    for call, seen in results:
        key = ("GET", call.route)
        assert seen.status == call.status, f"{call}: the client saw {seen}"
        if isinstance(seen, Response):
            # A body that raises mid-stream ends incomplete; every other full read is whole.
            assert seen.complete == (call.reason is None), f"{call}: the client saw {seen}"
            if call.reason is None:
                assert seen.body_len == call.size, f"{call}: the client saw {seen}"
            low[key] += call.size if call.sent is None else call.sent
        else:
            assert not seen.complete and seen.body_received >= ABORT_AFTER, (call, seen)
            aborted.add(key)
            # Bytes are counted as the body is handed over (streams, plain bodies); a failed
            # sendfile transfer is not observable and counts 0 (docs "Prometheus metrics").
            low[key] += 0 if call.route == "file/" else seen.body_received
        high[key] += call.size
        labels = {"method": "GET", "route": call.route, "status": str(call.status)}
        if call.reason is None:
            expected.delivered[label_key(labels)] += 1
            expected.observed[key] += 1
        else:
            expected.failures[label_key({**labels, "reason": call.reason})] += 1
            expected.observed[key] += 0
    for key in high:
        if key in aborted:
            expected.bytes_bounds[key] = (low[key], high[key])
        else:
            expected.exact_bytes[key] = low[key]
    return expected


def settled(expected: Expected) -> Callable[[Scrape], bool]:
    """The scrape shows as many outcomes as the mix sent, on the mix's routes."""

    def done(s: Scrape) -> bool:
        routes = expected.routes()
        count = sum(
            v
            for name in (DELIVERED, FAILURES)
            for k, v in s.series(name).items()
            if dict(k).get("route") in routes
        )
        return count >= expected.total

    return done


def check_exact(
    s: Scrape, expected: Expected, log: str, *, never_sent: frozenset[str] = frozenset()
) -> None:
    """Every counter series, histogram count, byte total and the gauge, exactly.
    ``never_sent``: routes whose failures never got to their first byte."""
    where = f"\n--- scrape ---\n{s.lines('django_http_')}\n--- server log ---\n{log}"
    assert s.series(DELIVERED) == dict(expected.delivered), where
    assert s.series(FAILURES) == dict(expected.failures), where
    for name in (DURATION, SEND):
        counts = {k: v for k, v in s.by(f"{name}_count", "method", "route").items() if v}
        wanted = {k: float(v) for k, v in expected.observed.items() if v}
        assert counts == wanted, f"{name}_count{where}"
        for (method, route), count in wanted.items():
            inf = s.value(f"{name}_bucket", method=method, route=route, le="+Inf")
            assert inf == count, f"{name}_bucket{{le=+Inf}} {method} {route}{where}"
    for (method, route), size in expected.exact_bytes.items():
        got = s.value(BYTES, method=method, route=route)
        assert got == size, f"{BYTES} {method} {route}: {got} != {size}{where}"
    for (method, route), (lowest, highest) in expected.bytes_bounds.items():
        got = s.value(BYTES, method=method, route=route)
        assert lowest <= got <= highest, f"{BYTES} {method} {route}: {got}{where}"
    # Every response of a mix got as far as its first byte (but ``never_sent``); each failure
    # is observed once in the undelivered histogram, whatever its status.
    reached: collections.Counter[tuple[str, ...]] = collections.Counter()
    gone: collections.Counter[tuple[str, ...]] = collections.Counter()
    for outcomes, failed in ((expected.delivered, False), (expected.failures, True)):
        for key, count in outcomes.items():
            labels = dict(key)
            if not (failed and labels["route"] in never_sent):
                reached[labels["method"], labels["route"]] += count
            if failed:
                gone[labels["method"], labels["route"], labels["reason"]] += count
    first = {k: v for k, v in s.by(f"{TIME_TO_FIRST_BYTE}_count", "method", "route").items() if v}
    assert first == {k: float(v) for k, v in reached.items()}, f"{TIME_TO_FIRST_BYTE}{where}"
    left = {k: v for k, v in s.by(f"{UNDELIVERED}_count", "method", "route", "reason").items() if v}
    assert left == {k: float(v) for k, v in gone.items()}, f"{UNDELIVERED}{where}"
    assert s.value(SENDING) == 0, f"{SENDING} is not 0 when idle{where}"


# gunicorn sync, 2 workers, multiprocess mode


@dataclass
class Gunicorn:
    server: Server
    record: Path
    multiproc_dir: Path
    ready_dir: Path
    expected: Expected | None = None
    settled_scrape: Scrape | None = None
    later_scrape: Scrape | None = None
    #: Scraped once both workers serve, before any tracked request.
    first_scrape: Scrape | None = None

    def wait_workers(self, gone: int | None = None, timeout: float = 30.0) -> list[int]:
        """The master's two workers (not ``gone``), once both loaded the application."""

        def ready() -> list[int]:
            workers = children(self.server.pid)
            marks = {int(p.name) for p in self.ready_dir.iterdir()}
            ok = len(workers) == 2 and gone not in workers and set(workers) <= marks
            return workers if ok else []

        try:
            return wait_for(ready, timeout, what="two ready gunicorn workers")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.server.log_tail()}") from None

    def serve_every_worker(self, workers: list[int], limit: int = 200) -> collections.Counter[int]:
        """Each worker's share of the recorded responses, after small requests (at most
        ``limit``) until every one of ``workers`` served at least one: a worker that replaced
        a stopped one starts with none, whichever test stopped it."""
        records = read_records(self.record)
        shares = collections.Counter(r["pid"] for r in records)
        sent = 0
        while any(shares[pid] == 0 for pid in workers):
            assert sent < limit, f"{limit} requests never reached all of {workers}: {shares}"
            assert full_read(self.server.port, "/small/").complete
            sent += 1
            # A record is written when delivery ends, which may follow the client's last read.
            records = wait_for_records(self.record, len(records) + 1)
            shares = collections.Counter(r["pid"] for r in records)
        return shares


@pytest.fixture(scope="class")
def gunicorn(tmp_path_factory: pytest.TempPathFactory, big_file: str) -> Iterator[Gunicorn]:
    workdir = tmp_path_factory.mktemp("metrics-gunicorn")
    multiproc = workdir / "prometheus"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"stale")  # on_starting must wipe it
    ready = workdir / "ready"
    ready.mkdir()
    record = workdir / "records.jsonl"
    server = Server(
        "gunicorn-sync",
        record=record,
        workers=2,
        log_dir=workdir,
        multiprocess_dir=multiproc,
        env={
            "SENT_OTEL_TEST_READY_DIR": str(ready),
            "SENT_OTEL_TEST_FILE": big_file,
        },
    )
    with server:
        running = Gunicorn(server, record, multiproc, ready)
        running.wait_workers()
        running.first_scrape = scrape(server.port)
        yield running


@pytest.fixture(scope="class")
def gunicorn_traffic(gunicorn: Gunicorn) -> Gunicorn:
    """The gunicorn mix, sent once, with the scrape that shows all of it."""
    if gunicorn.expected is None:
        port = gunicorn.server.port
        stale = gunicorn.multiproc_dir / "counter_999999.db"
        assert not stale.exists(), f"on_starting did not wipe {stale}"
        expected = run_mix(port, gunicorn_mix(), seed=1)
        gunicorn.settled_scrape = wait_scrape(
            port,
            settled(expected),
            what=f"{expected.total} outcomes",
            timeout=SETTLE_TIMEOUT,
            log=gunicorn.server.log_tail,
        )
        wait_for_records(gunicorn.record, expected.total, SETTLE_TIMEOUT)
        # Nothing arrives late: a scrape once every record is written shows the same numbers.
        # Taken here, before any test of the class sends more (they run in any order).
        gunicorn.later_scrape = scrape(port)
        gunicorn.expected = expected
    return gunicorn


@pytest.mark.usefixtures("big_file")
class TestGunicornMultiprocess:
    def test_the_first_scrape_shows_every_family(self, gunicorn: Gunicorn) -> None:
        """Before any tracked request the workers' files hold nothing: every family of the
        metric table is shown all the same, without series, the gauge at 0."""
        first = gunicorn.first_scrape
        assert first is not None
        table = {name: kind for name, (kind, _) in documented_metrics().items()}
        assert first.families() == table, first.text
        shown = [(s.name, s.value) for s in first.samples if not s.name.endswith("_created")]
        assert shown == [(SENDING, 0.0)], first.text

    def test_exact_counts_across_workers(self, gunicorn_traffic: Gunicorn) -> None:
        g = gunicorn_traffic
        assert g.expected is not None and g.settled_scrape is not None
        assert g.later_scrape is not None
        # The mix's records come first: the fixture waited for all of them before any test.
        pids = {r["pid"] for r in read_records(g.record)[: g.expected.total]}
        assert len(pids) == 2, f"the mix was served by {pids}, not by both workers"
        check_exact(g.settled_scrape, g.expected, g.server.log_tail())
        check_exact(g.later_scrape, g.expected, g.server.log_tail())

    def test_promtool_accepts_the_exposition(self, gunicorn_traffic: Gunicorn) -> None:
        promtool = shutil.which("promtool") or (
            "/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None
        )
        need_binary(promtool, "promtool")
        assert promtool is not None
        text = sc.get(gunicorn_traffic.server.port).text
        assert DELIVERED in text and FAILURES in text
        result = subprocess.run(
            [promtool, "check", "metrics"],
            input=text.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        output = (result.stdout + result.stderr).decode(errors="replace")
        assert (result.returncode, output) == (0, ""), f"{output}\n--- exposition ---\n{text}"

    def test_killed_worker_keeps_counters_and_drops_its_gauge(
        self, gunicorn_traffic: Gunicorn
    ) -> None:
        g = gunicorn_traffic
        port, log = g.server.port, g.server.log_tail
        assert g.expected is not None
        workers = g.wait_workers()
        shares = g.serve_every_worker(workers)
        total = sum(shares.values())
        before = wait_scrape(
            port,
            lambda s: sum(s.series(DELIVERED).values()) + sum(s.series(FAILURES).values()) >= total,
            what=f"{total} outcomes",
            log=log,
        )

        # Hold one worker in the middle of a 50 MB sendfile: a small receive window, no reads.
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        client.settimeout(15)
        try:
            client.connect((sc.HOST, port))
            request = f"GET /file/ HTTP/1.1\r\nHost: {sc.HOST}:{port}\r\nConnection: close\r\n\r\n"
            client.sendall(request.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(1024)
                assert data, "the server closed the stalled download"
                head += data
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            wait_scrape(port, lambda s: s.value(SENDING) == 1, what=f"{SENDING} 1", log=log)
            victim = wait_for(
                lambda: socket_owner(client, port, workers) or 0,
                10,
                what="the worker serving the stalled download",
            )
            assert shares[victim] > 0, f"worker {victim} served nothing before: {shares}"
            os.kill(victim, signal.SIGKILL)
        finally:
            reset(client)

        replacement = g.wait_workers(gone=victim)
        assert victim not in replacement and set(replacement) & set(workers), (
            f"workers {workers} -> {replacement} after killing {victim}"
        )
        after = wait_scrape(
            port, lambda s: s.value(SENDING) == 0, what=f"{SENDING} back to 0", log=log
        )
        for name in (DELIVERED, FAILURES, BYTES, f"{DURATION}_count", f"{SEND}_count"):
            assert after.series(name) == before.series(name), (
                f"{name} changed after worker {victim} (share {shares[victim]}) was killed\n"
                f"before:\n{before.lines(name)}\nafter:\n{after.lines(name)}\n{log()}"
            )
        assert after.series(f"{DURATION}_bucket") == before.series(f"{DURATION}_bucket")
        assert not list(g.multiproc_dir.glob(f"gauge_livesum_{victim}.db"))

        # The replacement counts on top of the dead worker's share.
        for _ in range(4):
            assert full_read(port, "/small/").complete
        small = label_key({"method": "GET", "route": "small/", "status": "200"})
        wanted = before.series(DELIVERED)[small] + 4
        wait_scrape(
            port,
            lambda s: s.series(DELIVERED).get(small) == wanted,
            what=f"small/ delivered {wanted}",
            log=log,
        )
        assert scrape(port).value(SENDING) == 0

    def test_worker_stopped_with_sigterm_keeps_its_counters(
        self, gunicorn_traffic: Gunicorn
    ) -> None:
        """A graceful worker exit (what gunicorn does on reload and max_requests): everything
        the worker recorded stays in the totals, its in-flight share goes."""
        g = gunicorn_traffic
        port, log = g.server.port, g.server.log_tail
        workers = g.wait_workers()
        expected = len(read_records(g.record)) + 6
        for _ in range(6):
            assert full_read(port, "/small/").complete
        small = label_key({"method": "GET", "route": "small/", "status": "200"})
        # A record is written when delivery ends, which may be after the client read the last
        # byte: wait for every record, then for /metrics to show them all.
        wait_for_records(g.record, expected)
        served = collections.Counter(r["pid"] for r in read_records(g.record))
        victim = max(workers, key=lambda pid: served[pid])
        assert served[victim] > 0, f"no worker of {workers} served anything: {served}"
        before = wait_scrape(
            port,
            lambda s: (
                sum(s.series(DELIVERED).values()) + sum(s.series(FAILURES).values())
                >= sum(served.values())
            ),
            what=f"{sum(served.values())} outcomes",
            log=log,
        )
        os.kill(victim, signal.SIGTERM)
        replacement = g.wait_workers(gone=victim)
        assert victim not in replacement, f"workers {workers} -> {replacement}"
        after = scrape(port)
        for name in (DELIVERED, FAILURES, BYTES, f"{DURATION}_bucket", f"{SEND}_count"):
            assert after.series(name) == before.series(name), (
                f"{name} changed after worker {victim} (share {served[victim]}) stopped\n"
                f"before:\n{before.lines(name)}\nafter:\n{after.lines(name)}\n{log()}"
            )
        assert after.series(DELIVERED)[small] >= 6
        assert after.value(SENDING) == 0
        assert not list(g.multiproc_dir.glob(f"gauge_livesum_{victim}.db"))


# uvicorn, one process, the package's ASGI wrapper


@pytest.fixture(scope="class")
def uvicorn(tmp_path_factory: pytest.TempPathFactory, big_file: str) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("metrics-uvicorn")
    with Server("uvicorn", log_dir=workdir, env={"SENT_OTEL_TEST_FILE": big_file}) as server:
        yield server


JUNK_METHODS = ("GET", "FOO", "get", "PROPFIND", "BREW", "M-SEARCH", "purge", "X_JUNK")
JUNK_REQUESTS = 10_000
JUNK_THREADS = 4
JUNK_DEADLINE = 90.0
FRAGMENT = re.compile(r"k[0-9a-f]{10}")


def case_sensitive(method: str) -> str:
    """The method label as HTTP reads a method (case-sensitive): ``get`` is not GET."""
    return method if method in METHODS else "other"


def upper_cased(method: str) -> str:
    """The method label as Django reads a method (``request.method`` is upper-cased)."""
    return case_sensitive(method.upper())


def junk_requests(count: int, seed: int) -> tuple[list[tuple[str, str]], set[str]]:
    """(method, target) pairs to paths no pattern matches, and the random fragments used."""
    rng = random.Random(seed)
    fragments: set[str] = set()

    def frag() -> str:
        value = f"k{rng.getrandbits(40):010x}"
        fragments.add(value)
        return value

    def pct(text: str) -> str:
        return "".join(f"%{ord(c):02X}" for c in text)

    shapes: list[Callable[[], str]] = [
        lambda: f"/{frag()}/{frag()}/",
        lambda: f"/{frag()}?{frag()}={frag()}&utm=%ff%fe",
        lambda: f"/{pct(frag())}/%e2%82%ac%2F{frag()}",
        lambda: f"/small/{frag()}",
        lambda: f"/articles/{frag()}/?page={frag()}",
        lambda: f"/%2e%2e/{frag()}%3Fq%3D{frag()}",
        lambda: f"/metrics/{frag()}?x=%00{frag()}",
    ]
    requests = [(rng.choice(JUNK_METHODS), shapes[i % len(shapes)]()) for i in range(count)]
    return requests, fragments


def known_routes() -> set[str]:
    from tests import urls

    return {str(getattr(p, "pattern", "")) for p in urls.urlpatterns} - {""} | {"unmatched"}


class TestUvicornExactCounts:
    """On a server of its own: the exact totals hold only if no other test sent anything."""

    def test_exact_counts(self, uvicorn: Server) -> None:
        expected = run_mix(uvicorn.port, uvicorn_mix(), seed=2)
        s = wait_scrape(
            uvicorn.port,
            settled(expected),
            what=f"{expected.total} outcomes",
            timeout=SETTLE_TIMEOUT,
            log=uvicorn.log_tail,
        )
        # Under ASGI Django reads a sync body whole before its first byte: this one raises.
        unsent = frozenset({"error-stream/"})
        check_exact(s, expected, uvicorn.log_tail(), never_sent=unsent)
        check_exact(scrape(uvicorn.port), expected, uvicorn.log_tail(), never_sent=unsent)


class TestUvicorn:
    def test_random_paths_and_junk_methods_add_no_series(self, uvicorn: Server) -> None:
        port = uvicorn.port
        before = scrape(port)
        requests, fragments = junk_requests(JUNK_REQUESTS, seed=3)
        deadline = time.monotonic() + JUNK_DEADLINE
        tallies: list[collections.Counter[tuple[str, str]]] = []
        sizes: list[collections.Counter[str]] = []
        connections: list[int] = []
        lock = threading.Lock()

        def worker(part: list[tuple[str, str]]) -> None:
            tally: collections.Counter[tuple[str, str]] = collections.Counter()
            size: collections.Counter[str] = collections.Counter()
            client = KeepAliveClient(port)
            try:
                for method, target in part:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"over {JUNK_DEADLINE:.0f}s: {sum(tally.values())}")
                    status, length = client.request(method, target)
                    tally[(method, str(status))] += 1
                    size[method] += length
            finally:
                client.close()
                with lock:
                    tallies.append(tally)
                    sizes.append(size)
                    connections.append(client.connections)

        parts = [requests[i::JUNK_THREADS] for i in range(JUNK_THREADS)]
        with ThreadPoolExecutor(JUNK_THREADS) as pool:
            for future in [pool.submit(worker, part) for part in parts]:
                future.result(timeout=JUNK_DEADLINE + 30)
        sent = sum(tallies, collections.Counter())
        assert sum(sent.values()) == JUNK_REQUESTS
        # Keep-alive really carried the traffic.
        assert sum(connections) <= JUNK_THREADS * 2, connections

        def unmatched(s: Scrape) -> float:
            return s.total(DELIVERED, route="unmatched") + s.total(FAILURES, route="unmatched")

        goal = unmatched(before) + JUNK_REQUESTS
        after = wait_scrape(
            port,
            lambda s: unmatched(s) >= goal,
            what=f"{JUNK_REQUESTS} more unmatched outcomes",
            timeout=SETTLE_TIMEOUT,
            log=uvicorn.log_tail,
        )
        where = f"\n{after.lines('django_http_')}\n{uvicorn.log_tail()}"

        # New series only for route="unmatched", with the bounded method labels.
        for name in (DELIVERED, FAILURES, BYTES, f"{DURATION}_count", f"{SEND}_count"):
            new = set(after.series(name)) - set(before.series(name))
            stray = [k for k in new if dict(k).get("route") != "unmatched"]
            assert not stray, f"{name}: new series {stray}{where}"
        assert after.series(FAILURES) == before.series(FAILURES), where

        # Exact: each (method label, status) counted as often as the clients saw it, and the
        # body bytes they read. A lower-case standard method ("get") is "other" as HTTP reads
        # it (case-sensitive) or GET as Django reads it (upper-cased): either, consistently.
        grown = {
            (dict(k)["method"], dict(k)["status"]): v - before.series(DELIVERED).get(k, 0.0)
            for k, v in after.series(DELIVERED).items()
            if dict(k)["route"] == "unmatched"
        }
        grown = {k: v for k, v in grown.items() if v}
        grown_bytes = {
            dict(k)["method"]: v - before.series(BYTES).get(k, 0.0)
            for k, v in after.series(BYTES).items()
            if dict(k)["route"] == "unmatched"
        }
        grown_bytes = {k: v for k, v in grown_bytes.items() if v}
        all_sizes = sum(sizes, collections.Counter())
        variants: dict[str, tuple[dict[tuple[str, str], float], dict[str, float]]] = {}
        for rule in (case_sensitive, upper_cased):
            counts: collections.Counter[tuple[str, str]] = collections.Counter()
            for (method, status), n in sent.items():
                counts[(rule(method), status)] += n
            size_by_label: collections.Counter[str] = collections.Counter()
            for method, n in all_sizes.items():
                size_by_label[rule(method)] += n
            variants[rule.__name__] = (
                {k: float(v) for k, v in counts.items()},
                {k: float(v) for k, v in size_by_label.items() if v},
            )
        matching = [name for name, wanted in variants.items() if wanted == (grown, grown_bytes)]
        assert matching, (
            f"scraped (method, status) -> count {grown} and bytes {grown_bytes}; "
            f"clients sent {variants}{where}"
        )

        # Bounded label values everywhere in the exposition; no path fragment anywhere.
        values: dict[str, set[str]] = {k: set() for k in ("method", "route", "status", "reason")}
        for sample in after.samples:
            for label, value in sample.labels.items():
                values.setdefault(label, set()).add(value)
        assert values["method"] <= METHODS | {"other"}, values["method"]
        assert values["route"] <= known_routes(), values["route"]
        assert values["reason"] <= {DISCONNECT, STREAM_ERROR}, values["reason"]
        assert all(v.isdigit() for v in values["status"]), values["status"]
        leaked = set(FRAGMENT.findall(after.text)) & fragments
        assert not leaked, f"path fragments in the exposition: {sorted(leaked)[:10]}{where}"
        assert not {v for v in after.label_values() if any(c in v for c in "?%")}, where


# uvicorn with an OpenTelemetry SDK and a protected /metrics


TOKEN = secrets.token_urlsafe(24)
OUTSIDE = "127.0.0.2"  # a loopback address outside the allowed 127.0.0.1/32


@pytest.fixture(scope="class")
def sdk_server(tmp_path_factory: pytest.TempPathFactory, big_file: str) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("metrics-sdk")
    env = {
        "DJANGO_SETTINGS_MODULE": SDK_SETTINGS,
        "SENT_OTEL_TEST_FILE": big_file,
        "SENT_OTEL_TEST_METRICS_TOKEN": TOKEN,
        "SENT_OTEL_TEST_METRICS_NETWORKS": "127.0.0.1/32",
    }
    with Server("uvicorn", log_dir=workdir, env=env) as server:
        yield server


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestSdkServer:
    def test_openmetrics_exemplars_carry_the_incoming_trace_id(self, sdk_server: Server) -> None:
        port = sdk_server.port
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        traceparent = f"00-{trace_id}-{parent}-01"
        assert full_read(port, "/small/", headers={"traceparent": traceparent}).complete
        headers = {**bearer(), "Accept": sc.OPENMETRICS}
        small = {"method": "GET", "route": "small/"}
        s = wait_scrape(
            port,
            lambda s: s.value(DELIVERED, **small, status="200") == 1,
            what="small/ delivered",
            headers=headers,
            log=sdk_server.log_tail,
        )
        assert s.content_type.startswith("application/openmetrics-text"), s.content_type
        where = f"\n{s.lines('django_http_')}\n{sdk_server.log_tail()}"

        counters = [
            x for x in s.samples if x.name == DELIVERED and x.labels == {**small, "status": "200"}
        ]
        assert len(counters) == 1 and counters[0].exemplar is not None, where
        exemplar = counters[0].exemplar.labels
        assert exemplar["trace_id"] == trace_id, where
        assert re.fullmatch(r"[0-9a-f]{16}", exemplar["span_id"]), exemplar
        assert exemplar["span_id"] != parent  # the response-delivered span, a child
        for name in (DURATION, SEND):
            buckets = [
                x
                for x in s.samples
                if x.name == f"{name}_bucket"
                and x.exemplar is not None
                and x.labels.items() >= small.items()
            ]
            assert buckets, f"no exemplar on a {name}_bucket line{where}"
            assert {b.exemplar.labels["trace_id"] for b in buckets if b.exemplar} == {trace_id}

        # The classic text format has no exemplars.
        text = sc.get(port, headers=bearer())
        assert text.headers["content-type"].startswith("text/plain"), text.headers
        assert trace_id not in text.text and DELIVERED in text.text

    def test_metrics_token_and_networks(self, sdk_server: Server) -> None:
        port = sdk_server.port

        def status(headers: dict[str, str] | None = None, source: str | None = None) -> int:
            return sc.get(port, headers=headers, source=source).status_code

        anonymous = sc.get(port)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers.get("www-authenticate", "").startswith("Bearer"), anonymous.headers
        assert DELIVERED not in anonymous.text
        assert status(bearer("not-the-token-at-all")) == 401
        assert status(bearer(TOKEN + "x")) == 401
        assert status({"Authorization": f"Basic {TOKEN}"}) == 401
        assert status({"Authorization": TOKEN}) == 401
        allowed = sc.get(port, headers=bearer())
        assert allowed.status_code == 200 and DELIVERED in allowed.text, allowed.text[:300]

        outside = sc.get(port, headers=bearer(), source=OUTSIDE)
        assert outside.status_code == 403, outside.text
        assert DELIVERED not in outside.text
        assert status(source=OUTSIDE) == 403
        # A client cannot claim an allowed address (no client-IP header is trusted by default).
        spoofed = {**bearer(), "X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}
        assert status(spoofed, source=OUTSIDE) == 403
