"""Settings of the example project: no database, DEBUG off, local hosts only."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

# A local example: never deploy this key.
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "example-only-7q2c9e1v0b8n4m6k3j5h1g7f9d2s4a6p8o0i2u4y6t8r"
)
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "example.apps.ExampleConfig",
    # Setup line 1: system checks for the SENT_OTEL_* settings.
    "django_sent_otel",
]

MIDDLEWARE = [
    # Setup line 2: first, so it times the whole request and sees every response.
    # (opentelemetry-instrumentation-django inserts its own middleware before it.)
    "django_sent_otel.middleware.DeliveryMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "example.urls"
WSGI_APPLICATION = "example.wsgi.application"
ASGI_APPLICATION = "example.asgi.application"

# SQLite, Django's default: the report/ view's long query runs on it (nothing is stored).
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

# Watch every request's client, so that django_http_abandoned_work_seconds_total covers all
# traffic (the views that register on_disconnect() are watched anyway).
SENT_OTEL_WATCH_DISCONNECTS = os.environ.get("EXAMPLE_WATCH_DISCONNECTS", "1") == "1"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

# Where the generated ~20 MB file of the download/ view is kept between runs.
EXAMPLE_CACHE_DIR = Path(
    os.environ.get("EXAMPLE_CACHE_DIR") or Path(tempfile.gettempdir()) / "django-sent-otel-example"
)
EXAMPLE_DOWNLOAD_SIZE = int(os.environ.get("EXAMPLE_DOWNLOAD_SIZE") or 20 * 1024 * 1024)
EXAMPLE_EXPORT_ROWS = int(os.environ.get("EXAMPLE_EXPORT_ROWS") or 20_000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "example": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django_sent_otel": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
