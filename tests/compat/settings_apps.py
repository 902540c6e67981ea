"""whitenoise, django-debug-toolbar, Django REST framework and sentry-sdk next to the plugin.

Served by a real gunicorn in ``tests/compat/test_apps.py``. The plugin's middleware stays first,
whitenoise right after it (as its documentation asks, at the top), the toolbar after that.

``SENT_OTEL_COMPAT_STATIC_ROOT`` is the directory whitenoise serves. With
``SENT_OTEL_COMPAT_SENTRY`` (a file) sentry-sdk is initialised too, with its Django integration
and a transport that appends its envelopes to that file (nothing leaves the machine: the DSN
points at a closed local port and the transport never sends). Without it sentry is not set up:
its WSGI wrapper hides gunicorn's file wrapper, so zero-copy is tested without it.
"""

from __future__ import annotations

import os

import sentry_sdk
from sentry_sdk.integrations.django import DjangoIntegration

from tests.compat import instruments
from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS as _BASE_APPS
from tests.settings import MIDDLEWARE as _BASE_MIDDLEWARE

# The toolbar shows only with DEBUG and for INTERNAL_IPS.
DEBUG = True
INTERNAL_IPS = ["127.0.0.1"]
ROOT_URLCONF = "tests.compat.urls"
INSTALLED_APPS = [
    *_BASE_APPS,
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.staticfiles",
    "rest_framework",
    "debug_toolbar",
]
MIDDLEWARE = [
    *_BASE_MIDDLEWARE,
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "debug_toolbar.middleware.DebugToolbarMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("SENT_OTEL_COMPAT_STATIC_ROOT", "/nonexistent-static-root")
# Serve what is in STATIC_ROOT, scanned once at start (DEBUG would turn both on).
WHITENOISE_AUTOREFRESH = False
WHITENOISE_USE_FINDERS = False
WHITENOISE_MAX_AGE = 60
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}
DEBUG_TOOLBAR_CONFIG = {"SHOW_COLLAPSED": True}

instruments.count_whitenoise_reads()

if os.environ.get(instruments.SENTRY_FILE_ENV):
    sentry_sdk.init(
        dsn=f"http://public@127.0.0.1:{instruments.CLOSED_PORT}/1",
        integrations=[DjangoIntegration()],
        transport=instruments.RecordingTransport,
        traces_sample_rate=1.0,
    )
