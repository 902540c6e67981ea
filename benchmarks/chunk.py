"""Instructions per body message of the ASGI wrapper alone: ``python -m benchmarks.chunk``.

The streaming rows of :mod:`benchmarks.instructions` run the whole Django stack, whose ASGI
handler hops to a thread for every response; this measures only what the wrapper adds to one
body message, single-threaded and exact. A tiny ASGI application sends the response start,
``--chunks`` body messages of 13 bytes with more to come and the final one, behind

- a plain ``send`` (``async def send(message): return None``), as in the in-process rows, and
- real uvicorn: its HTTP/1.1 protocol (h11) on one end of a loopback socket pair, an asyncio
  client on the other reading each chunked response whole before it sends the next request
  (keep-alive). uvicorn is where the wrapper asks, before every body message, whether the
  server knows its client is gone (``_compat.client_gone_probe``).

Each configuration runs under ``valgrind --tool=callgrind`` with 1 and ``--chunks`` messages
per response; (many - one) / (chunks - 1) / requests is one message. Configurations: bare
(the application itself), the floors of :mod:`benchmarks.floor` (an ``async def`` send wrapper;
a plain function that counts the bytes of body messages with more to come, the least an exact
byte count costs) and the plugin's wrapper, metrics only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_TOTALS = re.compile(r"^totals: (\d+)", re.MULTILINE)
CHUNK = b"data: token\n\n"
SERVERS = ("plain", "uvicorn")
WRAPPERS = ("bare", "floor-send", "floor-count", "plugin")
LABELS = {
    "bare": "the application alone",
    "floor-send": "floor: one `async def` send wrapper",
    "floor-count": "floor: a plain function counting the bytes (the least an exact count costs)",
    "plugin": "plugin wrapper (`DeliveryASGIMiddleware`), metrics only",
}
#: Seconds a response may take behind uvicorn (under callgrind too) before the run fails.
RESPONSE_TIMEOUT = 60.0
#: The configuration of :mod:`benchmarks.configs` whose settings the child loads.
BENCH_CONFIG = "asgi-plugin-metrics"


def application(chunks: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body"})

    return app


def wrap(name: str, app: Any) -> Any:
    if name == "bare":
        return app
    if name == "floor-send":
        from benchmarks.floor import SendFloorASGI

        return SendFloorASGI(app)
    if name == "floor-count":
        from benchmarks.floor import CountFloorASGI

        return CountFloorASGI(app)
    from django_sent_otel.asgi import DeliveryASGIMiddleware

    return DeliveryASGIMiddleware(app)


def plain_runner(app: Any) -> Callable[[int], None]:
    scope = {"type": "http", "method": "GET", "path": "/", "root_path": "", "headers": []}
    loop = asyncio.new_event_loop()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def many(n: int) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    return lambda n: loop.run_until_complete(many(n))


class _Client(asyncio.Protocol):
    """Reads one chunked response whole (up to its last-chunk marker), then the next."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] | None = None
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        self.tail = (self.tail + data)[-5:]
        if self.tail == b"0\r\n\r\n" and self.done is not None and not self.done.done():
            self.done.set_result(None)


def uvicorn_runner(app: Any) -> Callable[[int], None]:
    import socket

    from uvicorn.config import Config
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.server import ServerState

    loop = asyncio.new_event_loop()
    config = Config(app, http="h11", lifespan="off", access_log=False, log_level="error")
    config.load()
    state = ServerState()
    server_sock, client_sock = socket.socketpair()
    request = b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"

    async def connect() -> Any:
        await loop.connect_accepted_socket(
            lambda: H11Protocol(config, state, {}, _loop=loop), server_sock
        )
        return await loop.create_connection(_Client, sock=client_sock)

    transport, client = loop.run_until_complete(connect())

    async def many(n: int) -> None:
        for _ in range(n):
            client.done = loop.create_future()
            transport.write(request)
            await asyncio.wait_for(client.done, RESPONSE_TIMEOUT)  # bounded, never hangs

    return lambda n: loop.run_until_complete(many(n))


def _child(server: str, wrapper: str, chunks: int, n: int, warmup: int) -> None:
    os.environ.setdefault("SENT_OTEL_BENCH_CONFIG", BENCH_CONFIG)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    app = wrap(wrapper, application(chunks))
    run = (uvicorn_runner if server == "uvicorn" else plain_runner)(app)
    run(warmup)
    gc.collect()
    gc.disable()  # as in benchmarks.instructions: the collector's work is the heap's
    run(n)


def _instructions(
    valgrind: str, server: str, wrapper: str, chunks: int, n: int, warmup: int
) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENT_OTEL_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONHASHSEED"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        command = [valgrind, "--tool=callgrind", f"--callgrind-out-file={tmp}/out"]
        command += [sys.executable, "-m", "benchmarks.chunk", "--child", str(n)]
        command += ["--server", server, "--wrapper", wrapper, "--chunks", str(chunks)]
        command += ["--warmup", str(warmup)]
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        out = Path(tmp) / "out"
        match = _TOTALS.search(out.read_text()) if out.exists() else None
    if done.returncode != 0 or match is None:
        raise SystemExit(f"callgrind run of {server}/{wrapper} failed:\n{done.stderr[-3000:]}")
    return int(match.group(1))


def measure(
    valgrind: str, server: str, wrapper: str, chunks: int, n: int, warmup: int = 100
) -> float:
    """Instructions per body message with more to come."""
    one = _instructions(valgrind, server, wrapper, 1, n, warmup)
    many = _instructions(valgrind, server, wrapper, chunks, n, warmup)
    return (many - one) / (chunks - 1) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", nargs="*", default=list(SERVERS), choices=SERVERS)
    parser.add_argument("--wrappers", nargs="*", default=list(WRAPPERS), choices=WRAPPERS)
    parser.add_argument("--chunks", type=int, default=101)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--wrapper", choices=WRAPPERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.server, args.wrapper, args.chunks, args.child, args.warmup)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is needed (Debian package valgrind)")
    print(
        f"Per body message, measured with `python -m benchmarks.chunk` ({args.requests} "
        f"responses of 1 and {args.chunks} messages)"
    )
    print()
    print("| send | configuration | k instructions/message | over the application alone, k |")
    print("|---|---|---|---|")
    for server in args.servers:
        bare = None
        for wrapper in args.wrappers:
            value = measure(valgrind, server, wrapper, args.chunks, args.requests, args.warmup)
            if wrapper == "bare":
                bare = value
            over = "" if bare is None or wrapper == "bare" else f"{(value - bare) / 1000:+.2f}"
            print(
                f"| {server} | {LABELS[wrapper]} | {value / 1000:.2f} | {over} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
