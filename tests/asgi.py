"""ASGI entry points of the test project.

``application`` is the drop-in wrapper of django-sent-otel; ``plain_application`` is Django's
own handler, to test the middleware alone under ASGI.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django.core.asgi

import django_sent_otel.asgi

application = django_sent_otel.asgi.get_asgi_application()
plain_application = django.core.asgi.get_asgi_application()
