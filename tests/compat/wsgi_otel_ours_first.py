"""The OpenTelemetry set-up of ``tests.settings_otel`` with the plugin's middleware moved first.

``DjangoInstrumentor().instrument()`` always inserts its middleware at position 0 of
``MIDDLEWARE``; this entry point moves ``DeliveryMiddleware`` in front of it again before the
WSGI handler loads the middleware chain: the order the docs advise against, tested to
document what it does.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_otel")

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from tests.settings_otel import PLUGIN_MIDDLEWARE

settings.MIDDLEWARE = [
    PLUGIN_MIDDLEWARE,
    *(entry for entry in settings.MIDDLEWARE if entry != PLUGIN_MIDDLEWARE),
]

application = get_wsgi_application()
