"""Views of the benchmark project: trivial bodies, so the framework cost is what is measured."""

from __future__ import annotations

import io
import threading
from typing import Any

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse

BODY = b"Hello, world!\n"


def item(request: HttpRequest, pk: int) -> HttpResponse:
    """The same body behind a route with a URL parameter (label ``item/<int:pk>/``)."""
    return HttpResponse(BODY)


class CountingFile(io.FileIO):
    """A raw file counting every Python-level read: zero after a download means sendfile."""

    reads = 0  # process-wide, read back through /file-reads/
    _lock = threading.Lock()

    def _count(self) -> None:
        with CountingFile._lock:
            CountingFile.reads += 1

    def read(self, size: int = -1) -> bytes:
        self._count()
        return super().read(size)

    def readinto(self, buffer: Any) -> int:
        self._count()
        return super().readinto(buffer)

    def readall(self) -> bytes:
        self._count()
        return super().readall()


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BODY, content_type="text/plain")


async def ahello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BODY, content_type="text/plain")


#: One small chunk of the streaming views (an SSE event's size).
CHUNK = b"data: token\n\n"


def stream(request: HttpRequest, chunks: int) -> StreamingHttpResponse:
    """A stream of ``chunks`` small chunks from a generator (WSGI)."""
    return StreamingHttpResponse(CHUNK for _ in range(chunks))


async def _achunks(chunks: int) -> Any:
    for _ in range(chunks):
        yield CHUNK


async def astream(request: HttpRequest, chunks: int) -> StreamingHttpResponse:
    """The same stream from an async generator (ASGI: Django sends it as it comes)."""
    return StreamingHttpResponse(_achunks(chunks))


def file(request: HttpRequest) -> FileResponse:
    return FileResponse(
        CountingFile(settings.BENCH_FILE, "rb"), content_type="application/octet-stream"
    )


def file_reads(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(CountingFile.reads).encode(), content_type="text/plain")
