"""Settings of the benchmark project; the configuration comes from ``SENT_OTEL_BENCH_CONFIG``."""

from __future__ import annotations

import os
import tempfile

from benchmarks import configs

CONFIG = configs.get(os.environ.get(configs.ENV_VAR, "bare"))

SECRET_KEY = "django-sent-otel-benchmarks-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchmarks.urls"
INSTALLED_APPS = list(CONFIG.apps)
MIDDLEWARE = list(CONFIG.middleware)
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
USE_I18N = False

for _name, _value in CONFIG.settings.items():
    globals()[_name] = _value

#: The file behind ``/file/`` (created by :func:`tests.harness.data.ensure_big_file`).
BENCH_FILE = os.environ.get(
    "SENT_OTEL_BENCH_FILE", os.path.join(tempfile.gettempdir(), "sent-otel-bench-50mb.bin")
)
