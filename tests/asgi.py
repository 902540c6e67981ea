"""ASGI entry points of the test project.

``application`` is the drop-in wrapper of django-sent-otel; ``plain_application`` is Django's
own handler, to test the middleware alone under ASGI. ``send_probe`` answers whether the
plugin takes the server's ``send`` for granian's (``tests/test_compat.py``).
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django.core.asgi

import django_sent_otel.asgi
from django_sent_otel._compat import is_granian_send

application = django_sent_otel.asgi.get_asgi_application()
plain_application = django.core.asgi.get_asgi_application()


async def send_probe(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``b"granian"`` when ``is_granian_send(send)``, else ``b"other"``; lifespan acknowledged."""
    if scope["type"] == "lifespan":
        while True:
            event = (await receive())["type"]
            await send({"type": event + ".complete"})
            if event == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    body = b"granian" if is_granian_send(send) else b"other"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
