"""Settings of the memory probe (``tests/hardening/memory_probe.py``), run in a subprocess.

``SENT_OTEL_HARDENING_MEMORY_MODE`` is ``plugin`` (everything on: the middleware, an SDK tracer
provider with a batch processor, metrics on a private registry, a signal receiver and an
``on_delivered`` callback per request) or ``bare`` (Django alone, the same views).
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403

MODE = os.environ.get("SENT_OTEL_HARDENING_MEMORY_MODE", "plugin")

INSTALLED_APPS = ["django_sent_otel"]
ROOT_URLCONF = "tests.hardening.memory_probe"
if MODE == "plugin":
    MIDDLEWARE = [
        "django_sent_otel.middleware.DeliveryMiddleware",
        "tests.hardening.memory_probe.CallbackMiddleware",
    ]
elif MODE == "bare":
    MIDDLEWARE = []
else:
    raise RuntimeError(f"SENT_OTEL_HARDENING_MEMORY_MODE must be plugin or bare, not {MODE!r}")
SENT_OTEL_TRACER_PROVIDER = "tests.hardening.memory_probe.TRACER_PROVIDER"
SENT_OTEL_METRICS_REGISTRY = "tests.hardening.memory_probe.REGISTRY"
