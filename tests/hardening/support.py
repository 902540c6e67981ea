"""Helpers of the hardening tests: servers with metrics, scraping, waiting, slow and hashing
clients. Every wait has a deadline, every socket a timeout."""

from __future__ import annotations

import collections
import hashlib
import os
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.clients import HOST, connect, full_read, new_test_id, request_bytes
from tests.harness.servers import Server

T = TypeVar("T")

#: Outcome counters as (route, status, outcome) -> count; outcome is "delivered" or a reason.
Outcomes = collections.Counter[tuple[str, str, str]]

DELIVERED_TOTAL = "django_http_responses_delivered_total"
FAILURES_TOTAL = "django_http_response_delivery_failures_total"
#: gunicorn's "the application raised" report, and uvicorn's.
SERVER_ERROR_REPORTS = re.compile(r"Error handling request|Exception in ASGI application")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def start(
    kind: str,
    workdir: Path,
    *,
    settings: str = "tests.settings",
    record: bool = True,
    multiprocess_dir: bool = False,
    workers: int | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    big_file: str | None = None,
) -> Server:
    """Start a server of the test project with the given settings module (and its logs,
    records and multiprocess directory under ``workdir``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    environment = {"DJANGO_SETTINGS_MODULE": settings, **(env or {})}
    if big_file:
        environment["SENT_OTEL_TEST_FILE"] = big_file
    args = list(extra_args)
    if multiprocess_dir:
        path = workdir / "prometheus"
        path.mkdir(exist_ok=True)
        environment["PROMETHEUS_MULTIPROC_DIR"] = str(path)
        args += ["--config", "python:tests.hardening.gunicorn_conf"]
    server = Server(
        kind,
        record=workdir / "records.jsonl" if record else None,
        workers=workers if workers is not None else (2 if kind.startswith("gunicorn") else 1),
        env=environment,
        extra_args=args,
        log_dir=workdir,
    )
    return server.start()


def scrape_text(port: int, headers: Mapping[str, str] | None = None, timeout: float = 30) -> str:
    request = urllib.request.Request(f"http://{HOST}:{port}/metrics", headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode()


def outcomes(exposition: str) -> Outcomes:
    """Delivered and failed responses by (route, status, outcome) from a text exposition."""
    counts: Outcomes = collections.Counter()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == DELIVERED_TOTAL:
                outcome = "delivered"
            elif sample.name == FAILURES_TOTAL:
                outcome = sample.labels["reason"]
            else:
                continue
            key = (sample.labels["route"], sample.labels["status"], outcome)
            counts[key] += round(sample.value)
    return +counts


def scrape_outcomes(port: int) -> Outcomes:
    return outcomes(scrape_text(port))


def multiprocess_outcomes(path: str | os.PathLike[str]) -> Outcomes:
    """The same totals read straight from a prometheus_client multiprocess directory (after
    the server stopped, when no worker can add to them any more)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.fspath(path))  # type: ignore[no-untyped-call]
    return outcomes(generate_latest(registry).decode())


def total(counts: Outcomes, outcome: str | None = None) -> int:
    return sum(n for (_, _, o), n in counts.items() if outcome is None or o == outcome)


def difference(after: Outcomes, before: Outcomes) -> Outcomes:
    diff = collections.Counter(after)
    diff.subtract(before)
    return +diff


def server_error_reports(log: str) -> int:
    return len(SERVER_ERROR_REPORTS.findall(log))


@dataclass(frozen=True)
class Seen:
    """What a client saw of one response, for byte-for-byte comparisons."""

    status: int
    content_type: str | None
    content_length: str | None
    body_len: int
    sha256: str
    complete: bool


def hashed_read(port: int, path: str, method: str = "GET") -> Seen:
    response = full_read(port, path, method, keep_body=True, stall=5.0)
    body = response.body or b""
    return Seen(
        status=response.status,
        content_type=response.header("Content-Type"),
        content_length=response.header("Content-Length"),
        body_len=response.body_len,
        sha256=hashlib.sha256(body).hexdigest(),
        complete=response.complete,
    )


def sweep(port: int, requests: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Seen]:
    return {(method, path): hashed_read(port, path, method) for method, path in requests}


@dataclass(frozen=True)
class SlowRead:
    test_id: str
    status: int
    body_len: int
    complete: bool
    pauses: int


def slow_read(
    port: int,
    path: str,
    *,
    step: int = 64 * 1024,
    pause: float = 0.003,
    timeout: float = 60.0,
) -> SlowRead:
    """Read a response ``step`` bytes at a time with ``pause`` seconds between steps, through a
    small receive buffer, so that the server really waits for the client (back-pressure).

    Only ``Content-Length`` and chunked bodies of ``Connection: close`` responses are handled;
    the body is counted, not kept. Bounded by ``timeout`` overall.
    """
    test_id = new_test_id()
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, step)
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        sock.sendall(request_bytes(port, path, test_id=test_id))
        head = bytearray()
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                raise AssertionError(f"connection closed before the headers: {bytes(head)!r}")
            head += data
        end = head.index(b"\r\n\r\n")
        lines = bytes(head[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        received = len(head) - end - 4
        tail = bytes(head[end + 4 :])[-8:]
        pauses = 0
        while True:
            got = 0
            while got < step:
                if time.monotonic() > deadline:
                    raise AssertionError(f"slow read of {path} took longer than {timeout:.0f}s")
                data = sock.recv(step - got)
                if not data:
                    break
                got += len(data)
                tail = (tail + data)[-8:]
            received += got
            if got < step:
                break  # end of the response: the server closed the connection
            pauses += 1
            time.sleep(pause)
    finally:
        sock.close()
    if "content-length" in headers:
        body_len = received
        complete = received == int(headers["content-length"])
    else:  # chunked: count the framing out, check the last chunk
        body_len = -1
        complete = tail.endswith(b"0\r\n\r\n")
    return SlowRead(test_id, status, body_len, complete, pauses)


def raw_status(port: int, request: bytes, timeout: float = 30.0) -> int:
    """Send raw request bytes (``Connection: close``) and return the status code."""
    with connect(port, timeout) as sock:
        sock.sendall(request)
        data = bytearray()
        deadline = time.monotonic() + timeout
        while b"\r\n" not in data and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    line = bytes(data).split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise AssertionError(f"no status line in {bytes(data[:200])!r}")
    return int(parts[1])
