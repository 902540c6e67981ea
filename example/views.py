"""Views people recognise: a home page, a JSON API, a streamed CSV export, a large download."""

from __future__ import annotations

import csv
import datetime
import logging
import os
import time
from collections.abc import Iterator
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

from django_sent_otel import on_delivered
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
