"""Scraping ``/metrics`` of a real server, and the few process/socket helpers its tests need.

Every network call has a timeout and every wait a deadline; waits poll a condition (a scrape
reaching a value, a worker appearing), they never sleep for a fixed time and hope.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

HOST = "127.0.0.1"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SCRAPE_TIMEOUT = 15.0

LabelKey = tuple[tuple[str, str], ...]
T = TypeVar("T")


def label_key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


@dataclass
class Scrape:
    """One parsed exposition: every sample by (sample name, sorted labels)."""

    text: str
    content_type: str
    samples: list[Sample] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, content_type: str = "") -> Scrape:
        if content_type.startswith("application/openmetrics-text"):
            families = openmetrics_families(text)  # type: ignore[no-untyped-call]
        else:
            families = text_string_to_metric_families(text)
        samples = [sample for family in families for sample in family.samples]
        return cls(text, content_type, samples)

    def value(self, name: str, **labels: str) -> float:
        """The value of one sample (0 when the series does not exist)."""
        wanted = label_key(labels)
        for sample in self.samples:
            if sample.name == name and label_key(sample.labels) == wanted:
                return float(sample.value)
        return 0.0

    def series(self, name: str) -> dict[LabelKey, float]:
        """Every series of one sample name, by its sorted labels."""
        return {label_key(s.labels): float(s.value) for s in self.samples if s.name == name}

    def by(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """Every series of one sample name, keyed by the given labels' values (summed)."""
        out: dict[tuple[str, ...], float] = {}
        for sample in self.samples:
            if sample.name == name:
                key = tuple(sample.labels.get(label, "") for label in labels)
                out[key] = out.get(key, 0.0) + float(sample.value)
        return out

    def total(self, name: str, **labels: str) -> float:
        """Sum of the series of ``name`` whose labels include ``labels``."""
        return sum(
            float(s.value)
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def label_values(self) -> set[str]:
        return {value for sample in self.samples for value in sample.labels.values()}

    def lines(self, prefix: str) -> str:
        """The exposition lines starting with ``prefix`` (for failure messages)."""
        return "\n".join(line for line in self.text.splitlines() if line.startswith(prefix))


def get(
    port: int,
    path: str = "/metrics",
    *,
    headers: Mapping[str, str] | None = None,
    source: str | None = None,
    timeout: float = SCRAPE_TIMEOUT,
) -> httpx.Response:
    """One GET over a fresh connection, optionally from another loopback source address."""
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(transport=transport, timeout=timeout, trust_env=False) as client:
        return client.get(f"http://{HOST}:{port}{path}", headers=dict(headers or {}))


def scrape(
    port: int, *, headers: Mapping[str, str] | None = None, timeout: float = SCRAPE_TIMEOUT
) -> Scrape:
    response = get(port, headers=headers, timeout=timeout)
    if response.status_code != 200:
        raise AssertionError(f"/metrics answered {response.status_code}: {response.text[:500]}")
    return Scrape.parse(response.text, response.headers.get("content-type", ""))


def wait_scrape(
    port: int,
    condition: Callable[[Scrape], bool],
    *,
    what: str,
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
    show: str = "django_http_",
    log: Callable[[], str] | None = None,
) -> Scrape:
    """Scrape until ``condition`` holds; on timeout fail with the last scrape's lines."""
    deadline = time.monotonic() + timeout
    while True:
        last = scrape(port, headers=headers)
        if condition(last):
            return last
        if time.monotonic() >= deadline:
            tail = f"\n--- server log ---\n{log()}" if log else ""
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last scrape:\n"
                f"{last.lines(show)}{tail}"
            )
        time.sleep(0.05)


# Processes


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc/<pid>/task/*/children``)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(set(found))


def wait_for(
    condition: Callable[[], T], *, what: str, timeout: float = 30.0, interval: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _tcp_inode(local_port: int, remote_port: int) -> int | None:
    """Inode of the IPv4 TCP socket ``127.0.0.1:local_port <-> *:remote_port``."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], int(parts[9])
            if int(local.split(":")[1], 16) == local_port and (
                int(remote.split(":")[1], 16) == remote_port and inode
            ):
                return inode
    return None


def socket_owner(client: socket.socket, server_port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` holds the server side of the client's connection."""
    inode = _tcp_inode(server_port, client.getsockname()[1])
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except (FileNotFoundError, PermissionError):
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


# A minimal keep-alive HTTP/1.1 client for arbitrary methods and request targets.


class KeepAliveClient:
    """Sends requests one after another over one connection (reconnecting when the server
    closes it after a response). Bodies are counted, not kept."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.connections = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buffer.clear()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections += 1
        return sock

    def _fill(self, sock: socket.socket) -> None:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection mid-response")
        self.buffer += data

    def _line(self, sock: socket.socket) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill(sock)
        end = self.buffer.index(b"\r\n")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _take(self, sock: socket.socket, length: int) -> None:
        while len(self.buffer) < length:
            self._fill(sock)
        del self.buffer[:length]

    def _chunked(self, sock: socket.socket) -> int:
        total = 0
        while True:
            size = int(self._line(sock).split(b";", 1)[0], 16)
            if size == 0:
                while self._line(sock):  # trailers, up to the empty line
                    pass
                return total
            self._take(sock, size + 2)
            total += size

    def request(self, method: str, target: str) -> tuple[int, int]:
        """Send one request; returns (status, body length)."""
        if self.sock is None:
            self.sock = self._connect()
            self.buffer.clear()
        sock = self.sock
        head = f"{method} {target} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n"
        sock.sendall(head.encode("ascii"))
        while b"\r\n\r\n" not in self.buffer:
            self._fill(sock)
        end = self.buffer.index(b"\r\n\r\n")
        status_line, *header_lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            length = self._chunked(sock)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            self._take(sock, length)
        else:
            raise AssertionError(f"{method} {target}: a body without framing: {headers}")
        if "close" in headers.get("connection", "").lower():
            self.close()
        return status, length
