"""ASGI entry points of the test project.

``application`` is the drop-in wrapper of django-sent-otel; ``plain_application`` is Django's
own handler, to test the middleware alone under ASGI. ``gone_probe`` answers whether the plugin
can read the server's "client gone" fact from the ``send`` it hands the application
(``tests/test_compat.py``).
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django.core.asgi

import django_sent_otel.asgi
from django_sent_otel._compat import client_gone_probe

application = django_sent_otel.asgi.get_asgi_application()
plain_application = django.core.asgi.get_asgi_application()


async def _lifespan(scope: dict[str, Any], receive: Any, send: Any) -> bool:
    """Acknowledge lifespan events; False for anything but an HTTP request."""
    if scope["type"] == "lifespan":
        while True:
            event = (await receive())["type"]
            await send({"type": event + ".complete"})
            if event == "lifespan.shutdown":
                return False
    return bool(scope["type"] == "http")


async def gone_probe(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``b"none"`` when no "client gone" fact can be read from the server's ``send``, else
    what it says while the client waits for this answer (``b"gone=False"``)."""
    if not await _lifespan(scope, receive, send):
        return
    gone = client_gone_probe(send)
    await _answer(send, b"none" if gone is None else f"gone={gone()}".encode())


async def _answer(send: Any, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
