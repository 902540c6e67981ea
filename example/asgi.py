"""ASGI entry point (e.g. ``uvicorn example.asgi:application``).

Setup line 3: django-sent-otel's drop-in ``get_asgi_application`` wraps Django's ASGI handler so
that client disconnects and unfinished bodies are seen under ASGI too.
"""

from __future__ import annotations

import os

from django_sent_otel.asgi import get_asgi_application
from example import otel

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
otel.configure()  # before the middleware is loaded: instrumentation adds its own

application = get_asgi_application()
