"""A raw-socket WebSocket client (wsproto) for real-server tests: connect, text frames, close.

Every socket operation has a timeout and every wait a deadline; the handshake carries the
``X-Test-Id`` header like the HTTP clients, so a test can tell whether a record belongs to it.
"""

from __future__ import annotations

import socket
import time
from collections import deque

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from tests.harness.clients import DEFAULT_TIMEOUT, HOST, TEST_ID_HEADER, connect, new_test_id
from tests.harness.lifecycle import Started

_RECV = 64 * 1024


class WebSocket(Started):
    """One client WebSocket connection on 127.0.0.1 (``with WebSocket(port, "/ws/") as ws``)."""

    def __init__(self, port: int, path: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.port = port
        self.path = path
        self.timeout = timeout
        self.test_id = new_test_id()
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._sock: socket.socket | None = None
        self._events: deque[Event] = deque()
        self._text: list[str] = []
        self.close_code: int | None = None

    def open(self) -> WebSocket:
        self._sock = connect(self.port, self.timeout)
        request = Request(
            host=f"{HOST}:{self.port}",
            target=self.path,
            extra_headers=[(TEST_ID_HEADER.encode(), self.test_id.encode())],
        )
        self._sock.sendall(self._ws.send(request))
        event = self._next_event(time.monotonic() + self.timeout)
        if not isinstance(event, AcceptConnection):
            detail = f"status {event.status_code}" if isinstance(event, RejectConnection) else ""
            raise AssertionError(f"WebSocket handshake on {self.path} refused: {event} {detail}")
        return self

    def _next_event(self, deadline: float) -> Event:
        assert self._sock is not None, "open() first"
        while not self._events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no WebSocket event on {self.path} before the deadline")
            self._sock.settimeout(min(self.timeout, remaining))
            data = self._sock.recv(_RECV)
            self._ws.receive_data(data or None)
            self._events.extend(self._ws.events())
            if not data and not self._events:
                raise AssertionError(f"the server closed {self.path} without a close frame")
        return self._events.popleft()

    def send_text(self, text: str) -> None:
        assert self._sock is not None, "open() first"
        self._sock.sendall(self._ws.send(TextMessage(data=text)))

    def receive_text(self) -> str:
        """The next complete text message (pings are answered on the way)."""
        deadline = time.monotonic() + self.timeout
        while True:
            event = self._next_event(deadline)
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return text
            elif isinstance(event, Ping):
                assert self._sock is not None
                self._sock.sendall(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                raise AssertionError(f"the server closed {self.path} with code {event.code}")

    def close(self, code: int = 1000) -> int | None:
        """Send a close frame, wait (bounded) for the server's, and close the socket."""
        sock = self._sock
        if sock is None:
            return self.close_code
        try:
            sock.sendall(self._ws.send(CloseConnection(code=code)))
            deadline = time.monotonic() + self.timeout
            while self.close_code is None:
                event = self._next_event(deadline)
                if isinstance(event, CloseConnection):
                    self.close_code = event.code
        except (OSError, AssertionError):
            pass  # the server may drop the connection right after its close frame
        finally:
            sock.close()
            self._sock = None
        return self.close_code

    def start(self) -> WebSocket:
        return self.open()

    def stop(self) -> int | None:
        return self.close()
