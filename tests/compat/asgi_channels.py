"""Channels' ``ProtocolTypeRouter``, HTTP and a websocket route, inside the delivery wrapper.

The wrapper goes around the whole router, as a project does when it wraps its ASGI
application: it must track every HTTP response and hand websocket connections on untouched.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from django.core.asgi import get_asgi_application

# Django first: the consumers' imports need the app registry.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from django_sent_otel.asgi import DeliveryASGIMiddleware  # noqa: E402
from tests.compat.consumers import EchoConsumer  # noqa: E402

application = DeliveryASGIMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_application,
            "websocket": URLRouter([path("ws/echo/", EchoConsumer.as_asgi())]),
        }
    )
)
