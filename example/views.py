"""Views people recognise: a home page, a JSON API, a streamed CSV export, a large download,
and work that stops when its client leaves (a report query, token streams, a view in steps)."""

from __future__ import annotations

import asyncio
import csv
import datetime
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from django.conf import settings
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.views.decorators.http import require_safe

from django_sent_otel import is_disconnected, on_delivered, on_disconnect
from django_sent_otel.delivery import Delivery

audit = logging.getLogger("example.audit")

# The export reads its rows in batches, like a database cursor: each batch costs a round trip.
EXPORT_BATCH = 500
EXPORT_BATCH_SECONDS = 0.002


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    context = {
        "year": datetime.date.today().year,
        "rows": settings.EXAMPLE_EXPORT_ROWS,
        "size_mb": settings.EXAMPLE_DOWNLOAD_SIZE // (1024 * 1024),
    }
    return render(request, "example/home.html", context)


def _article(year: int, number: int) -> dict[str, object]:
    return {
        "id": year * 1000 + number,
        "title": f"Article {number} of {year}",
        "published": datetime.date(year, 1 + number % 12, 1 + number % 28).isoformat(),
        "words": 300 + (number * 37) % 1200,
    }


@require_safe
def articles(request: HttpRequest, year: int) -> JsonResponse:
    if not 1900 <= year <= 2100:
        return JsonResponse({"error": "year out of range"}, status=404)
    return JsonResponse({"year": year, "articles": [_article(year, n) for n in range(1, 26)]})


class _Echo:
    """A file-like object whose write() returns the line: csv.writer without a buffer."""

    def write(self, value: str) -> str:
        return value


def _rows(count: int) -> Iterator[list[object]]:
    yield ["id", "title", "author", "published", "views"]
    start = datetime.date(2020, 1, 1)
    for first in range(0, count, EXPORT_BATCH):
        time.sleep(EXPORT_BATCH_SECONDS)  # the next batch from the "database"
        for n in range(first, min(first + EXPORT_BATCH, count)):
            published = start + datetime.timedelta(days=n % 1800)
            yield [n, f"Observability notes, part {n}", f"author-{n % 97}", published, n % 10007]


@require_safe
def export_csv(request: HttpRequest) -> StreamingHttpResponse:
    """Stream a CSV export row by row, and audit whether the client really got all of it."""
    writer = csv.writer(_Echo())
    rows = settings.EXAMPLE_EXPORT_ROWS
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in _rows(rows)), content_type="text/csv"
    )
    response["Content-Disposition"] = 'attachment; filename="articles.csv"'

    # Runs after the last byte was handed to the server, or once the client went away.
    def audit_export(delivery: Delivery) -> None:
        if delivery.delivered:
            audit.info(
                "export.csv: %d rows delivered (%d bytes in %.3f s)",
                rows,
                delivery.bytes_sent,
                delivery.duration,
            )
        else:
            audit.warning(
                "export.csv: NOT delivered (%s after %d bytes, %.3f s): not marking it as "
                "downloaded",
                delivery.outcome,
                delivery.bytes_sent,
                delivery.duration,
            )

    on_delivered(request, audit_export)
    return response


def _download_file() -> Path:
    """The generated download, created once in the cache directory (atomically)."""
    size = settings.EXAMPLE_DOWNLOAD_SIZE
    directory = Path(settings.EXAMPLE_CACHE_DIR)
    path = directory / f"download-{size}.bin"
    try:
        if path.stat().st_size == size:
            return path
    except FileNotFoundError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    line = b"django-sent-otel example download: every byte counted until delivered.\n"
    block = (line * (1024 * 1024 // len(line) + 1))[: 1024 * 1024]
    partial = directory / f".{path.name}.{os.getpid()}"
    with partial.open("wb") as f:
        remaining = size
        while remaining > 0:
            remaining -= f.write(block[: min(len(block), remaining)])
    os.replace(partial, path)
    return path


@require_safe
def download(request: HttpRequest) -> FileResponse:
    """A large file, sent with sendfile by gunicorn (the plugin never reads it)."""
    path = _download_file()
    return FileResponse(path.open("rb"), as_attachment=True, filename="example-download.bin")


# Stopping the work nobody will receive (docs: "Knowing the client left while the work runs").
# Each view takes ?watch=0 to ignore its client leaving: the "before" of the docs' figures.

#: Rows the report's query counts: a recursive query that runs for seconds on SQLite.
REPORT_ROWS = 10_000_000
REPORT_SQL = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < %s) "
    "SELECT count(*) FROM n"
)
TOKENS = 100
TOKEN_SECONDS = 0.05
STEPS = 100
STEP_SECONDS = 0.05


def _watching(request: HttpRequest) -> bool:
    return request.GET.get("watch") != "0"


def report(request: HttpRequest) -> HttpResponse:
    """A long SQLite query, interrupted the moment the user leaves."""
    from django.db import OperationalError, connection

    connection.ensure_connection()
    if _watching(request):
        # sqlite3's interrupt() is thread-safe: the watcher thread (WSGI) or the event loop
        # (ASGI) makes the running query raise OperationalError("interrupted").
        on_disconnect(request, connection.connection.interrupt)
    try:
        with connection.cursor() as cursor:
            cursor.execute(REPORT_SQL, [REPORT_ROWS])
            (count,) = cursor.fetchone()
    except OperationalError:
        if is_disconnected(request):
            audit.info("report cancelled: the client left")
            return HttpResponse(status=499)  # nobody reads it; nginx's code for "client left"
        raise
    return JsonResponse({"rows": count})


def _tokens(request: HttpRequest) -> Iterator[bytes]:
    for i in range(TOKENS):
        if _watching(request) and is_disconnected(request):
            return  # stop producing (and paying for) tokens nobody reads
        time.sleep(TOKEN_SECONDS)  # an upstream model producing the next token
        yield f"token {i}\n".encode()


def tokens(request: HttpRequest) -> StreamingHttpResponse:
    """An LLM-style token stream from a sync generator."""
    return StreamingHttpResponse(_tokens(request), content_type="text/plain")


async def _atokens(request: HttpRequest) -> AsyncIterator[bytes]:
    for i in range(TOKENS):
        if _watching(request) and is_disconnected(request):
            return
        await asyncio.sleep(TOKEN_SECONDS)
        yield f"token {i}\n".encode()


async def atokens(request: HttpRequest) -> StreamingHttpResponse:
    """The same stream from an async generator."""
    return StreamingHttpResponse(_atokens(request), content_type="text/plain")


def steps(request: HttpRequest) -> HttpResponse:
    """A sync view doing its work in steps, checking between two of them."""
    done = 0
    for _ in range(STEPS):
        if _watching(request) and is_disconnected(request):
            break
        time.sleep(STEP_SECONDS)  # one step of work
        done += 1
    return JsonResponse({"steps": done})
