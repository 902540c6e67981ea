"""Raw-socket HTTP/1.1 clients for real-server tests: full reads, keep-alive, aborts with RST.

Every call sends a fresh ``X-Test-Id`` header and returns that id, so a test can find the one
delivery record its request produced. Bodies are counted, not kept (``keep_body`` keeps them),
so a 50 MB download costs no memory. Every socket operation has a timeout.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import struct
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

HOST = "127.0.0.1"
TEST_ID_HEADER = "X-Test-Id"
DEFAULT_TIMEOUT = 30.0
_RECV = 256 * 1024
_MAX_HEADER = 64 * 1024


class ProtocolError(AssertionError):
    """The server's bytes are not valid HTTP/1.1 (or ended before the headers)."""


@dataclass
class Response:
    """What the client saw of one response."""

    test_id: str
    #: 0 when no status line arrived (only with ``stall``).
    status: int
    headers: list[tuple[str, str]]
    body_len: int
    #: The body ended as its framing says (Content-Length / last chunk / close for
    #: close-delimited bodies). False: the connection ended or stalled in the middle.
    complete: bool = True
    #: How the body was delimited: "none", "length", "chunked" or "close".
    framing: str = "none"
    body: bytes | None = None
    #: The server's answer allows reusing the connection.
    reusable: bool = False

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default


@dataclass
class Abort:
    """An aborted request: what was received before the client reset the connection."""

    test_id: str
    status: int | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body_received: int = 0
    #: The whole body had already arrived when the client aborted (nothing left to cut).
    complete: bool = False
    #: Wall-clock time (``time.time()``) just before the client reset, closed or half-closed.
    left_at: float = 0.0


@dataclass
class KeepAlivePair:
    first: Response
    second: Response
    #: The second request went over the first one's connection.
    reused: bool


def new_test_id() -> str:
    return uuid.uuid4().hex


def connect(
    port: int, timeout: float = DEFAULT_TIMEOUT, *, rcvbuf: int | None = None
) -> socket.socket:
    """A connection to the server; ``rcvbuf`` shrinks the receive buffer before connecting,
    so that the server cannot park a whole body in kernel buffers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN: SO_LINGER on with a zero timeout."""
    with contextlib.suppress(OSError):  # already reset by the peer: just close
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def request_bytes(
    port: int,
    path: str,
    *,
    method: str = "GET",
    test_id: str,
    headers: Mapping[str, str] | None = None,
    keep_alive: bool = False,
) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        f"{TEST_ID_HEADER}: {test_id}",
        "User-Agent: sent-otel-tests",
        "Accept: */*",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Reader:
    """Buffered reads from a socket, counting (and optionally keeping) body bytes.

    Every receive is bounded by the socket timeout and the whole exchange by ``deadline``.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = bytearray()
        self.eof = False
        self.http10 = False
        self.body = 0  # body bytes consumed by the current response

    def _fill(self) -> bool:
        if self.eof:
            return False
        if time.monotonic() > self.deadline:
            raise TimeoutError("the response took longer than the overall deadline")
        try:
            data = self.sock.recv(_RECV)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def head(self) -> tuple[int, list[tuple[str, str]]]:
        """Read the status line and headers (skipping 1xx interim responses)."""
        while True:
            while b"\r\n\r\n" not in self.buffer:
                if len(self.buffer) > _MAX_HEADER:
                    raise ProtocolError("response headers larger than 64 KB")
                if not self._fill():
                    raise ProtocolError(
                        f"connection closed before the end of the headers: {bytes(self.buffer)!r}"
                    )
            end = self.buffer.index(b"\r\n\r\n")
            block = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            status_line, *header_lines = block.split("\r\n")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ProtocolError(f"bad status line {status_line!r}")
            status = int(parts[1])
            headers = []
            for line in header_lines:
                name, sep, value = line.partition(":")
                if not sep:
                    raise ProtocolError(f"bad header line {line!r}")
                headers.append((name.strip(), value.strip()))
            if 100 <= status < 200 and status != 101:
                continue
            self.http10 = parts[0] == "HTTP/1.0"
            self.body = 0
            return status, headers

    def line(self) -> bytes | None:
        """One CRLF-terminated line, or None when the connection ended first."""
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEADER:
                raise ProtocolError("chunk header line too long")
            if not self._fill():
                return None
        end = self.buffer.index(b"\r\n")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def take(self, n: int | None, keep: bytearray | None, limit: int | None = None) -> int:
        """Consume ``n`` body bytes (None: until the connection closes).

        Stops early when the connection ends, or once ``self.body`` reached ``limit``.
        """
        taken = 0
        while n is None or taken < n:
            if limit is not None and self.body >= limit:
                break
            if not self.buffer and not self._fill():
                break
            step = len(self.buffer) if n is None else min(n - taken, len(self.buffer))
            if keep is not None:
                keep += self.buffer[:step]
            del self.buffer[:step]
            taken += step
            self.body += step
        return taken


def _read_body(
    reader: _Reader,
    status: int,
    headers: list[tuple[str, str]],
    method: str,
    keep: bytearray | None,
    limit: int | None = None,
) -> tuple[bool, str]:
    """Read a body framed per RFC 9112 section 6.3; the count is ``reader.body``.

    Returns (complete, framing). With ``limit``, stops once at least that many body bytes
    were read (then complete is False unless the body ended right there).
    """
    lower = {k.lower(): v for k, v in headers}
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return True, "none"
    if "chunked" in lower.get("transfer-encoding", "").lower():
        while True:
            size_line = reader.line()
            if size_line is None:
                return False, "chunked"
            size_text = size_line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise ProtocolError(f"bad chunk size {size_text!r}") from exc
            if size == 0:
                while True:  # trailers, up to the empty line
                    trailer = reader.line()
                    if trailer is None:
                        return False, "chunked"
                    if not trailer:
                        return True, "chunked"
            if reader.take(size, keep, limit) < size:
                return False, "chunked"
            if reader.line() != b"":
                return False, "chunked"
    if "content-length" in lower:
        length = int(lower["content-length"])
        reader.take(length, keep, limit)
        return reader.body >= length, "length"
    reader.take(None, keep, limit)
    return reader.eof, "close"


def _reusable(headers: list[tuple[str, str]], framing: str, http10: bool) -> bool:
    connection = ",".join(v for k, v in headers if k.lower() == "connection").lower()
    if framing == "close" or "close" in connection:
        return False
    return not http10 or "keep-alive" in connection


def _exchange(
    sock: socket.socket,
    port: int,
    path: str,
    *,
    method: str,
    headers: Mapping[str, str] | None,
    keep_alive: bool,
    keep_body: bool,
    reader: _Reader,
    stall: float | None = None,
) -> Response:
    test_id = new_test_id()
    sock.sendall(
        request_bytes(
            port, path, method=method, test_id=test_id, headers=headers, keep_alive=keep_alive
        )
    )
    if stall is not None:
        sock.settimeout(stall)
    keep = bytearray() if keep_body else None
    status, response_headers = 0, []
    try:
        status, response_headers = reader.head()
        complete, framing = _read_body(reader, status, response_headers, method, keep)
    except TimeoutError:
        if stall is None:
            raise
        complete, framing = False, "stalled"
    return Response(
        test_id=test_id,
        status=status,
        headers=response_headers,
        body_len=reader.body,
        complete=complete,
        framing=framing,
        body=None if keep is None else bytes(keep),
        reusable=complete and _reusable(response_headers, framing, reader.http10),
    )


def full_read(
    port: int,
    path: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    keep_body: bool = False,
    stall: float | None = None,
) -> Response:
    """Send one request (``Connection: close``) and read the whole response.

    A body cut short by the server gives ``complete=False``. With ``stall``, ``stall`` seconds
    without a byte end the read too (``framing="stalled"``, ``status`` 0 if no status line
    came): for servers that hang the connection after a body error.
    """
    with connect(port, timeout) as sock:
        reader = _Reader(sock, time.monotonic() + timeout)
        return _exchange(
            sock,
            port,
            path,
            method=method,
            headers=headers,
            keep_alive=False,
            keep_body=keep_body,
            reader=reader,
            stall=stall,
        )


# A deliberate baseline of the repetition check: the signatures of full_read and
# keep_alive_pair look alike (port, path, method, headers, timeout), as their callers expect.
def keep_alive_pair(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> KeepAlivePair:
    """Two requests on one connection if the server keeps it alive (else a second connection).

    ``reused`` tells whether the second request really went over the first connection.
    """
    with connect(port, timeout) as sock:
        reader = _Reader(sock, time.monotonic() + timeout)
        exchange = functools.partial(
            _exchange, sock, port, path, method=method, headers=headers, keep_body=False
        )
        first = exchange(keep_alive=True, reader=reader)
        if first.reusable:
            try:
                second = exchange(keep_alive=False, reader=reader)
            except (ProtocolError, ConnectionError) as exc:
                # Only "closed before any byte of the answer" means the server dropped the
                # idle connection; anything else is a real protocol error.
                dropped = isinstance(exc, ConnectionError) or (reader.eof and not reader.buffer)
                if not dropped:
                    raise
            else:
                return KeepAlivePair(first, second, reused=True)
    second = full_read(port, path, method, headers, timeout=timeout)
    return KeepAlivePair(first, second, reused=False)


def abort_after(
    port: int,
    path: str,
    nbytes: int = 16384,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    rcvbuf: int | None = None,
) -> Abort:
    """Read until ``nbytes`` of body arrived (or the body ended), then close with RST."""
    test_id = new_test_id()
    sock = connect(port, timeout, rcvbuf=rcvbuf)
    try:
        sock.sendall(request_bytes(port, path, method=method, test_id=test_id, headers=headers))
        reader = _Reader(sock, time.monotonic() + timeout)
        status, response_headers = reader.head()
        complete, _ = _read_body(reader, status, response_headers, method, None, limit=nbytes)
        return Abort(test_id, status, response_headers, reader.body, complete)
    finally:
        reset(sock)


#: How a client leaves: ``reset`` (RST), ``close`` (a plain close: FIN), ``half-close``
#: (``shutdown(SHUT_WR)``, then it reads on until the server closes).
LEAVES = ("reset", "close", "half-close")


def _leave(sock: socket.socket, how: str, deadline: float) -> None:
    if how == "reset":
        reset(sock)
        return
    if how == "half-close":
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            reader = _Reader(sock, deadline)
            while reader._fill():
                reader.buffer.clear()
    sock.close()


def abort_while_running(
    port: int,
    path_with_marker: str,
    marker_path: str | os.PathLike[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    headers: Mapping[str, str] | None = None,
    how: str = "reset",
) -> Abort:
    """Send the request, wait until the view created ``marker_path``, then leave: close with
    RST, or as ``how`` says (one of :data:`LEAVES`).

    ``path_with_marker`` is the path; ``?marker=<marker_path>`` is appended when absent.
    """
    if how not in LEAVES:
        raise ValueError(f"how must be one of {LEAVES}, got {how!r}")
    marker = os.fspath(marker_path)
    path = path_with_marker
    if "marker=" not in path:
        path += ("&" if "?" in path else "?") + "marker=" + quote(marker, safe="")
    test_id = new_test_id()
    sock = connect(port, timeout)
    try:
        sock.sendall(request_bytes(port, path, test_id=test_id, headers=headers))
        deadline = time.monotonic() + timeout
        while not os.path.exists(marker):
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the view behind {path} did not create {marker} within {timeout:.0f}s"
                )
            time.sleep(0.01)
        left_at = time.time()
        _leave(sock, how, deadline)
        return Abort(test_id, None, left_at=left_at)
    finally:
        sock.close()  # after _leave: a no-op


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
    sock = connect(port, timeout, rcvbuf=step)
    try:
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


def pipelined(
    port: int, paths: Iterable[str], *, timeout: float = DEFAULT_TIMEOUT
) -> list[Response]:
    """Send every request at once on one connection (HTTP/1.1 pipelining), then read the
    responses in order, until the server closes the connection (a server without keep-alive
    answers only the first); the last request asks the server to close."""
    paths = list(paths)
    ids = [new_test_id() for _ in paths]
    data = b"".join(
        request_bytes(port, path, test_id=test_id, keep_alive=i < len(paths) - 1)
        for i, (path, test_id) in enumerate(zip(paths, ids, strict=True))
    )
    responses = []
    with connect(port, timeout) as sock:
        sock.sendall(data)
        reader = _Reader(sock, time.monotonic() + timeout)
        for test_id in ids:
            if responses and not reader.buffer and not reader._fill():
                break  # closed after the previous response
            status, headers = reader.head()
            complete, framing = _read_body(reader, status, headers, "GET", None)
            responses.append(Response(test_id, status, headers, reader.body, complete, framing))
    return responses


def slow_upload(
    port: int,
    path: str,
    marker_path: str | os.PathLike[str] | None,
    *,
    size: int = 64 * 1024,
    pause: float = 0.5,
    timeout: float = DEFAULT_TIMEOUT,
) -> Response:
    """POST ``size`` bytes: half of them, then (once the view created ``marker_path``) a pause
    of ``pause`` seconds, then the rest; returns the response. Without ``marker_path`` (an
    ASGI server: Django reads the whole body before the view runs) the pause follows the
    first half at once."""
    marker = "" if marker_path is None else os.fspath(marker_path)
    if marker:
        path += ("&" if "?" in path else "?") + "marker=" + quote(marker, safe="")
    test_id = new_test_id()
    headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    with connect(port, timeout) as sock:
        sock.sendall(request_bytes(port, path, method="POST", test_id=test_id, headers=headers))
        sock.sendall(b"u" * (size // 2))
        deadline = time.monotonic() + timeout
        while marker and not os.path.exists(marker):
            if time.monotonic() >= deadline:
                raise AssertionError(f"the view behind {path} did not start within {timeout:.0f}s")
            time.sleep(0.01)
        time.sleep(pause)  # the upload still arriving, slowly: not a fixed wait on the server
        sock.sendall(b"u" * (size - size // 2))
        reader = _Reader(sock, deadline)
        status, response_headers = reader.head()
        complete, framing = _read_body(reader, status, response_headers, "POST", None)
        return Response(test_id, status, response_headers, reader.body, complete, framing)
