"""Settings of the test project, shared by the in-process tests and the real-server tests."""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "django-sent-otel-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
INSTALLED_APPS = ["django_sent_otel", "tests"]
MIDDLEWARE = ["django_sent_otel.middleware.DeliveryMiddleware"]
if os.environ.get("SENT_OTEL_TEST_ACCEL_BUFFERING"):  # nginx tests: see tests.middleware
    MIDDLEWARE.append("tests.middleware.accel_buffering")
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

#: The big file behind ``/file/`` (created once by ``tests.harness.data.ensure_big_file``).
SENT_OTEL_TEST_FILE = os.environ.get(
    "SENT_OTEL_TEST_FILE", os.path.join(tempfile.gettempdir(), "sent-otel-test-50mb.bin")
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {
        "django_sent_otel": {"handlers": ["stderr"], "level": "WARNING", "propagate": True},
    },
}
