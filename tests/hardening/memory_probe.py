"""The memory probe: many requests through Django's WSGI handler in one clean process.

Run by ``test_memory.py`` in a subprocess (``DJANGO_SETTINGS_MODULE`` =
``tests.hardening.settings_memory``); prints one JSON object. Each request calls
``WSGIHandler`` directly with a fresh environ, iterates the returned body and closes it, as a
WSGI server does, cycling through six shapes: a plain 200, a route with a converter, a
streaming body, a ``FileResponse`` through ``wsgi.file_wrapper``, a 204 and a HEAD, and a 404.

Phases: warm-up; RSS and a tracemalloc snapshot; the measured requests; RSS and a second
snapshot (the span queue is flushed and ``gc.collect()`` run before each measure). Then a
window of requests with the cyclic garbage collector disabled: ``gc.collect()`` afterwards
returns how many objects only a cycle kept alive.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from wsgiref.util import FileWrapper

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from prometheus_client import CollectorRegistry

import django_sent_otel
from benchmarks.inproc import wsgi_environ
from tests.harness.data import ensure_big_file

# Sinks of the plugin, named by the settings module.


class CountingExporter(SpanExporter):
    """Counts exported spans and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


EXPORTER = CountingExporter()
TRACER_PROVIDER = TracerProvider()
if os.environ.get("SENT_OTEL_HARDENING_SPAN_PROCESSOR", "batch") == "simple":
    TRACER_PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
else:
    TRACER_PROVIDER.add_span_processor(BatchSpanProcessor(EXPORTER))
REGISTRY = CollectorRegistry()
COUNTS = {"signal": 0, "callback": 0}


def receiver(sender: Any, **kwargs: Any) -> None:
    COUNTS["signal"] += 1


def callback(delivery: Any) -> None:
    COUNTS["callback"] += 1


class CallbackMiddleware:
    """Registers :func:`callback` with ``on_delivered`` for every request."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        django_sent_otel.on_delivered(request, callback)
        return self.get_response(request)


# Views and URLs (this module is the ROOT_URLCONF).

_FILE = os.path.join(tempfile.gettempdir(), "sent-otel-hardening-memory.bin")
_BODY = b"m" * 512
_CHUNK = b"c" * 1024


def small(request: HttpRequest) -> HttpResponse:
    return HttpResponse(_BODY, content_type="application/octet-stream")


def article(request: HttpRequest, year: int) -> HttpResponse:
    return HttpResponse(f"articles of {year}\n".encode(), content_type="text/plain")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter((_CHUNK,) * 4), content_type="application/octet-stream")


def file(request: HttpRequest) -> FileResponse:
    return FileResponse(open(_FILE, "rb"), content_type="application/octet-stream")


def empty(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=204)


urlpatterns = [
    path("small/", small),
    path("articles/<int:year>/", article),
    path("stream/", stream),
    path("file/", file),
    path("empty/", empty),
]

# The driver.

_REQUESTS = (
    ("GET", "/small/"),
    ("GET", "/articles/{n}/"),
    ("GET", "/stream/"),
    ("GET", "/file/"),
    ("GET", "/empty/"),
    ("HEAD", "/small/"),
    ("GET", "/missing/{n}/"),
)


def _environ(method: str, path_info: str) -> dict[str, Any]:
    # The benchmarks' minimal WSGI environ, for the test project's host, with a file wrapper.
    return wsgi_environ(
        path_info,
        REQUEST_METHOD=method,
        SERVER_NAME="testserver",
        SERVER_PORT="80",
        HTTP_HOST="testserver",
        **{"wsgi.file_wrapper": FileWrapper},
    )


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def run(handler: Callable[..., Iterable[bytes]], count: int, offset: int = 0) -> int:
    """Send ``count`` requests; returns the body bytes received."""
    received = 0
    kinds = len(_REQUESTS)
    for i in range(offset, offset + count):
        method, template = _REQUESTS[i % kinds]
        result = handler(_environ(method, template.format(n=i)), _start_response)
        for chunk in result:
            received += len(chunk)
        result.close()  # type: ignore[attr-defined]
    return received


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def settle() -> None:
    """Export queued spans and collect garbage, so that a measure sees only what is retained."""
    TRACER_PROVIDER.force_flush()
    gc.collect()
    gc.collect()


def cyclic_garbage(handler: Callable[..., Iterable[bytes]], per_shape: int) -> dict[str, Any]:
    """Per request shape: objects only the cyclic collector could free, and how many of them
    are the plugin's own (type defined in ``django_sent_otel``)."""
    found: dict[str, Any] = {}
    for index, (method, template) in enumerate(_REQUESTS):
        shape = f"{method} {template.format(n='n')}"
        settle()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for i in range(per_shape):
                result = handler(_environ(method, template.format(n=i)), _start_response)
                for _chunk in result:
                    pass
                result.close()  # type: ignore[attr-defined]
            TRACER_PROVIDER.force_flush()
            unreachable = gc.collect()
            ours = sum(
                1 for obj in gc.garbage if type(obj).__module__.startswith("django_sent_otel")
            )
        finally:
            gc.garbage.clear()
            gc.set_debug(0)
            gc.enable()
        found[shape] = {
            "index": index,
            "per_request": round(unreachable / per_shape, 3),
            "plugin_objects_per_request": round(ours / per_shape, 3),
        }
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--gc-per-shape", type=int, default=1_000)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args(argv)

    import django
    from django.core.wsgi import get_wsgi_application

    from django_sent_otel.signals import response_delivered

    # Written whole under a temporary name: probes of another run may be serving it.
    ensure_big_file(_FILE, 4096)
    django.setup()
    response_delivered.connect(receiver, dispatch_uid="memory-probe")
    handler = get_wsgi_application()

    out: dict[str, Any] = {
        "mode": os.environ.get("SENT_OTEL_HARDENING_MEMORY_MODE", "plugin"),
        "python": sys.version.split()[0],
        "django": django.__version__,
    }
    started = time.perf_counter()
    run(handler, args.warmup)
    settle()
    if args.tracemalloc:
        tracemalloc.start(1)
    snap_before = tracemalloc.take_snapshot() if args.tracemalloc else None
    gc_before = [s["collections"] for s in gc.get_stats()]
    rss_before = rss_bytes()
    blocks_before = sys.getallocatedblocks()
    t0 = time.perf_counter()
    run(handler, args.count, offset=args.warmup)
    elapsed = time.perf_counter() - t0
    gc_after = [s["collections"] for s in gc.get_stats()]
    settle()
    rss_after = rss_bytes()
    blocks_after = sys.getallocatedblocks()
    if snap_before is not None:
        snap_after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = snap_after.compare_to(snap_before, "lineno")
        out["tracemalloc_growth"] = sum(s.size_diff for s in stats)
        out["tracemalloc_top"] = [str(s) for s in stats[:8]]
    out.update(
        count=args.count,
        warmup=args.warmup,
        seconds=round(elapsed, 2),
        us_per_request=round(elapsed / args.count * 1e6, 1),
        rss_before=rss_before,
        rss_after=rss_after,
        blocks_before=blocks_before,
        blocks_after=blocks_after,
        gc_collections=[a - b for a, b in zip(gc_after, gc_before, strict=True)],
    )
    if args.gc_per_shape:
        out["cyclic_garbage"] = cyclic_garbage(handler, args.gc_per_shape)
    settle()
    total = args.warmup + args.count + args.gc_per_shape * len(_REQUESTS)
    out.update(
        requests=total,
        spans=EXPORTER.spans,
        signals=COUNTS["signal"],
        callbacks=COUNTS["callback"],
        total_seconds=round(time.perf_counter() - started, 2),
    )
    print(json.dumps(out))
    return 0
