"""One in-process measurement, run in a fresh subprocess: ``python -m benchmarks.inproc``.

Builds the application for ``SENT_OTEL_BENCH_CONFIG`` and calls it directly, with no server:
WSGI through Django's ``WSGIHandler`` (minimal environ, response iterated and closed), ASGI
through Django's ``ASGIHandler`` (behind the plugin's wrapper when the plugin is on) with a
minimal scope/receive/send. Prints one JSON object: wall and CPU microseconds per request, the
garbage collections per generation during the timed loop, the cyclic garbage left per request
(``gc.collect()`` after a run with the collector off), and what the plugin recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import app, configs

WSGI_PATH = "/"
ASGI_PATH = "/async/"  # an async view: no thread hop for the view itself


def wsgi_environ(path: str, **extra: Any) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    environ.update(extra)
    return environ


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


def wsgi_runner(
    handler: Any, path: str = WSGI_PATH, connection: Any = None
) -> Callable[[int], None]:
    """``connection``: a connected socket handed to the application as gunicorn does
    (``gunicorn.socket``), one keep-alive connection for every request."""
    base = wsgi_environ(path)
    if connection is not None:
        base["gunicorn.socket"] = connection

    def run(n: int) -> None:
        for _ in range(n):
            result = handler(dict(base), _start_response)
            for _chunk in result:
                pass
            result.close()

    return run


def asgi_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def asgi_runner(application: Any, path: str = ASGI_PATH) -> Callable[[int], None]:
    base = asgi_scope(path)
    request = {"type": "http.request", "body": b"", "more_body": False}
    loop = asyncio.new_event_loop()

    async def one() -> None:
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return request
            # Like a server with the client still connected: block until cancelled.
            await loop.create_future()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            return None

        await application(dict(base), receive, send)

    async def many(n: int) -> None:
        for _ in range(n):
            await one()

    def run(n: int) -> None:
        loop.run_until_complete(many(n))

    return run


def delivered_total() -> float:
    """The plugin's delivered counter summed over every label set (0 when not installed)."""
    from prometheus_client import REGISTRY

    total = 0.0
    for family in REGISTRY.collect():
        if family.name == "django_http_responses_delivered":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def measure(cfg: configs.Config, requests: int, warmup: int, cycle_requests: int) -> dict[str, Any]:
    application = app.asgi_application() if cfg.asgi else app.wsgi_application()
    run = asgi_runner(application) if cfg.asgi else wsgi_runner(application)
    run(warmup)
    gc.collect()

    collections = [0, 0, 0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections[info["generation"]] += 1

    gc.callbacks.append(on_gc)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    run(requests)
    wall1, cpu1 = time.perf_counter(), time.process_time()
    gc.callbacks.remove(on_gc)

    # Reference cycles: with the collector off, whatever gc.collect() finds afterwards is
    # garbage that only the cycle collector could free.
    gc.collect()
    gc.disable()
    try:
        run(cycle_requests)
        cyclic = gc.collect()
    finally:
        gc.enable()

    total = warmup + requests + cycle_requests
    return {
        "config": cfg.name,
        "requests": requests,
        "us_per_request": (wall1 - wall0) / requests * 1e6,
        "cpu_us_per_request": (cpu1 - cpu0) / requests * 1e6,
        "gc_per_10k": [c * 10_000 / requests for c in collections],
        "cyclic_objects_per_request": cyclic / max(cycle_requests, 1),
        "tracked_fraction": delivered_total() / total if cfg.plugin else None,
        "spans_per_request": app.exported_spans() / total if cfg.sdk else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=None, help="configuration (default: from env)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--cycle-requests", type=int, default=1_000)
    args = parser.parse_args(argv)
    if args.config:
        import os

        os.environ[configs.ENV_VAR] = args.config
    result = measure(app.config(), args.requests, args.warmup, args.cycle_requests)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
