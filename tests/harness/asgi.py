"""Playing an ASGI server in process: a request's scope, and a client that reads the response
(optionally leaving after some body bytes, or while the view runs)."""

from __future__ import annotations

import asyncio
from typing import Any

from django_sent_otel import signals


def scope(path: str, method: str = "GET") -> dict[str, Any]:
    path, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }


async def serve(
    app: Any,
    path: str,
    *,
    method: str = "GET",
    disconnect_after_bytes: int | None = None,
    marker: Any = None,
) -> tuple[list[dict[str, Any]], int]:
    """Play a server: feed the request, collect messages, disconnect after some body bytes."""
    sent: list[dict[str, Any]] = []
    received = 0
    gone = asyncio.Event()
    done = asyncio.Event()
    request_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if disconnect_after_bytes is None:
            await done.wait()
        elif disconnect_after_bytes > 0:
            await gone.wait()
        elif marker is not None:  # leave once the view is running
            for _ in range(1000):
                if marker.exists():
                    break
                await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal received
        sent.append(message)
        if message["type"] == "http.response.body":
            received += len(message.get("body", b""))
            if disconnect_after_bytes is not None and received >= disconnect_after_bytes:
                gone.set()
                await asyncio.sleep(0.05)
            if not message.get("more_body", False):
                done.set()

    await asyncio.wait_for(app(scope(path, method), receive, send), 30)
    await asyncio.sleep(0)
    await asyncio.gather(*signals._pending)
    return sent, received
