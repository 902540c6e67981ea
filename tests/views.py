"""Views of the test project. Their route templates (see tests/urls.py) become metric labels."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.conf import settings
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
    StreamingHttpResponse,
)

import django_sent_otel
from tests.harness.data import ensure_big_file
from tests.harness.records import append, callback_for, record_path, request_test_id

SMALL_BODY = b"s" * 1024
BIG_SIZE = 8 * 1024 * 1024
CHUNK = b"c" * (64 * 1024)
CHUNKS = 200
STREAM_SIZE = CHUNKS * len(CHUNK)
ERROR_CHUNKS = 3
SLOW_SECONDS = 1.5
SLOW_STEP = 0.05
SLOW_BODY = b"slow"
#: How long the first-byte views wait before their first chunk, and their chunks.
FIRST_BYTE_WAIT = 0.3
EVENT = b"data: token\n\n"
EVENTS = 3
#: The slow streams: an event every SLOW_STEP, for SLOW_SECONDS (a client leaves meanwhile).
SLOW_EVENTS = int(SLOW_SECONDS / SLOW_STEP)


class CountingFile(io.FileIO):
    """A raw file that counts Python-level reads: zero means the server used sendfile."""

    reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return super().read(size)

    def readinto(self, buffer: Any) -> int:
        self.reads += 1
        return super().readinto(buffer)


def _mark(request: HttpRequest) -> None:
    """Append a byte to the file named by ``?marker=``: tells a test that the view is running
    (its size, how many such views started)."""
    marker = request.GET.get("marker")
    if marker:
        with open(marker, "ab") as f:
            f.write(b".")


def small(request: HttpRequest) -> HttpResponse:
    return HttpResponse(SMALL_BODY, content_type="application/octet-stream")


def big(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"b" * BIG_SIZE, content_type="application/octet-stream")


def _chunks() -> Iterator[bytes]:
    for _ in range(CHUNKS):
        yield CHUNK


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_chunks(), content_type="application/octet-stream")


async def _achunks() -> AsyncIterator[bytes]:
    for _ in range(CHUNKS):
        yield CHUNK
        await asyncio.sleep(0)


def astream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_achunks(), content_type="application/octet-stream")


def _late_events() -> Iterator[bytes]:
    time.sleep(FIRST_BYTE_WAIT)
    for _ in range(EVENTS):
        yield EVENT


def wait_first(request: HttpRequest) -> StreamingHttpResponse:
    """A server-sent event stream whose first event takes FIRST_BYTE_WAIT (WSGI)."""
    return StreamingHttpResponse(_late_events(), content_type="text/event-stream")


async def _alate_events() -> AsyncIterator[bytes]:
    await asyncio.sleep(FIRST_BYTE_WAIT)
    for _ in range(EVENTS):
        yield EVENT


def await_first(request: HttpRequest) -> StreamingHttpResponse:
    """The same stream from an async generator (ASGI: sent as it comes)."""
    return StreamingHttpResponse(_alate_events(), content_type="text/event-stream")


def _slow_events() -> Iterator[bytes]:
    for _ in range(SLOW_EVENTS):
        yield EVENT
        time.sleep(SLOW_STEP)


def slow_stream(request: HttpRequest) -> StreamingHttpResponse:
    """An event every SLOW_STEP: a client that leaves is seen at the next event (WSGI)."""
    return StreamingHttpResponse(_slow_events(), content_type="text/event-stream")


async def _aslow_events() -> AsyncIterator[bytes]:
    for _ in range(SLOW_EVENTS):
        yield EVENT
        await asyncio.sleep(SLOW_STEP)


def aslow_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_aslow_events(), content_type="text/event-stream")


def file(request: HttpRequest) -> FileResponse:
    path = ensure_big_file(settings.SENT_OTEL_TEST_FILE)
    return FileResponse(CountingFile(path, "rb"), content_type="application/octet-stream")


def _failing_chunks() -> Iterator[bytes]:
    for _ in range(ERROR_CHUNKS):
        yield CHUNK
    raise RuntimeError("the body failed mid-stream (on purpose)")


def error_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_failing_chunks(), content_type="application/octet-stream")


def slow(request: HttpRequest) -> HttpResponse:
    _mark(request)
    deadline = time.monotonic() + SLOW_SECONDS
    while time.monotonic() < deadline:
        time.sleep(SLOW_STEP)
    return HttpResponse(SLOW_BODY, content_type="text/plain")


async def aslow(request: HttpRequest) -> HttpResponse:
    _mark(request)
    deadline = time.monotonic() + SLOW_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(SLOW_STEP)
    return HttpResponse(SLOW_BODY, content_type="text/plain")


def empty(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=204)


def not_modified(request: HttpRequest) -> HttpResponseNotModified:
    return HttpResponseNotModified()


def article(request: HttpRequest, year: int) -> HttpResponse:
    return HttpResponse(f"articles of {year}\n".encode(), content_type="text/plain")


def callback(request: HttpRequest) -> HttpResponse:
    django_sent_otel.on_delivered(request, callback_for(request))
    return HttpResponse(b"callback registered\n", content_type="text/plain")


async def async_small(request: HttpRequest) -> HttpResponse:
    return HttpResponse(SMALL_BODY, content_type="application/octet-stream")


def crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view failed (on purpose)")


#: How long ``leave/`` works at most when nobody leaves, and its step.
LEAVE_SECONDS = 10.0
LEAVE_STEP = 0.01


def _leave_record(request: HttpRequest, kind: str, **fields: Any) -> None:
    path = record_path()
    if path:
        append(
            path, {"kind": kind, "test_id": request_test_id(request), "pid": os.getpid(), **fields}
        )


def leave(request: HttpRequest) -> HttpResponse:
    """Works in small steps for ``?seconds=`` (default :data:`LEAVE_SECONDS`) or until its
    client leaves. Its ``on_disconnect`` callback records a ``kind: "left"`` line (wall-clock
    time), the view a ``kind: "leave"`` line when it stops (``?watch=0``: no callback)."""
    seconds = float(request.GET.get("seconds", LEAVE_SECONDS))
    registered = None
    if request.GET.get("watch") != "0":

        def left() -> None:
            _leave_record(request, "left", at=time.time())

        registered = django_sent_otel.on_disconnect(request, left)
    _mark(request)
    started = time.time()
    seen = None
    while time.time() - started < seconds:
        if django_sent_otel.is_disconnected(request):
            seen = time.time()
            break
        time.sleep(LEAVE_STEP)
    _leave_record(request, "leave", registered=registered, seen_at=seen, stopped_at=time.time())
    return HttpResponse(b"done\n", content_type="text/plain")


def expected_body_size(name: str) -> int:
    """Body bytes a full GET of a view produces (used by the tests to check bytes_sent)."""
    sizes = {
        "small": len(SMALL_BODY),
        "async-small": len(SMALL_BODY),
        "big": BIG_SIZE,
        "stream": STREAM_SIZE,
        "astream": STREAM_SIZE,
        "file": os.path.getsize(settings.SENT_OTEL_TEST_FILE),
        "slow": len(SLOW_BODY),
        "aslow": len(SLOW_BODY),
        "empty": 0,
        "not-modified": 0,
    }
    return sizes[name]
