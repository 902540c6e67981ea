"""Views of the compat project: Django REST framework's, a page for the toolbar, a crash."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

#: What the streaming API view sends: this many JSON lines of ``STREAM_LINE_SIZE`` bytes.
STREAM_LINES = 400
STREAM_LINE_SIZE = 16 * 1024
ARTICLES = [{"id": 1, "title": "Delivered"}, {"id": 2, "title": "Not yet"}]
CRASH_MESSAGE = "compat crash for sentry"


def stream_line(number: int) -> bytes:
    head = json.dumps({"line": number, "pad": ""}).encode()
    pad = STREAM_LINE_SIZE - len(head) - 1
    return json.dumps({"line": number, "pad": "x" * pad}).encode() + b"\n"


class ArticleList(APIView):
    """JSON for API clients, the browsable API's HTML page for browsers."""

    def get(self, request: Request) -> Response:
        return Response({"articles": ARTICLES})


class ArticleStream(APIView):
    """A DRF view streaming JSON lines (a StreamingHttpResponse passes through DRF as is)."""

    def get(self, request: Request) -> StreamingHttpResponse:
        def lines() -> Iterator[bytes]:
            for number in range(STREAM_LINES):
                yield stream_line(number)

        return StreamingHttpResponse(lines(), content_type="application/x-ndjson")


class Crash(APIView):
    """Raises an exception DRF does not handle: Django answers 500, sentry reports it."""

    def get(self, request: Request) -> Any:
        raise RuntimeError(CRASH_MESSAGE)


def page(request: HttpRequest) -> HttpResponse:
    """An HTML page the debug toolbar inserts itself into."""
    return HttpResponse(
        "<!DOCTYPE html><html><head><title>page</title></head><body><p>page</p></body></html>"
    )
