"""Settings of the single-process metrics server: an OpenTelemetry SDK and a protected /metrics.

- A global SDK ``TracerProvider`` with an always-on sampler and no exporter: spans are sampled
  (so exemplars exist) and go nowhere. With no server instrumentation the plugin parents its
  span to the ``traceparent`` the request carries (the global propagator).
- ``SENT_OTEL_TEST_METRICS_TOKEN`` and ``SENT_OTEL_TEST_METRICS_NETWORKS`` (comma-separated
  CIDRs) in the environment become ``SENT_OTEL_METRICS_TOKEN`` and
  ``SENT_OTEL_METRICS_ALLOWED_NETWORKS``.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from tests.settings import *  # noqa: F403

trace.set_tracer_provider(TracerProvider(sampler=ALWAYS_ON))

SENT_OTEL_METRICS_TOKEN = os.environ.get("SENT_OTEL_TEST_METRICS_TOKEN") or None
SENT_OTEL_METRICS_ALLOWED_NETWORKS = [
    network.strip()
    for network in os.environ.get("SENT_OTEL_TEST_METRICS_NETWORKS", "").split(",")
    if network.strip()
] or None
