"""Settings of the real-server security tests: ``/metrics`` protection from the environment.

``SENT_OTEL_HARDENING_TOKEN`` (bearer token), ``SENT_OTEL_HARDENING_NETWORKS`` (comma-separated
allowed networks) and ``SENT_OTEL_HARDENING_CLIENT_IP_HEADER`` (trusted proxy header) become the
plugin's settings; unset means the plugin's default.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403

SENT_OTEL_METRICS_TOKEN = os.environ.get("SENT_OTEL_HARDENING_TOKEN") or None
_networks = os.environ.get("SENT_OTEL_HARDENING_NETWORKS")
SENT_OTEL_METRICS_ALLOWED_NETWORKS = _networks.split(",") if _networks else None
SENT_OTEL_METRICS_CLIENT_IP_HEADER = os.environ.get("SENT_OTEL_HARDENING_CLIENT_IP_HEADER") or None
