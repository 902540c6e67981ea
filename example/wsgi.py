"""WSGI entry point (gunicorn: ``example.wsgi:application``).

Under WSGI the middleware alone sees the end of every delivery: no wrapper needed.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from example import otel

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
otel.configure()  # before the middleware is loaded: instrumentation adds its own

application = get_wsgi_application()
