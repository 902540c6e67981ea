"""The public names the tests check, spelled once: metric names from the contract.

The tests spell the metric names themselves instead of importing them from the package: a
renamed metric must fail the tests (dashboards and alerts depend on these names), not follow
the rename silently. Outcome strings come from :mod:`django_sent_otel.delivery` and are
re-exported here so a test imports every name from one place.
"""

from __future__ import annotations

from typing import Any, Final

from prometheus_client import CollectorRegistry

from django_sent_otel.delivery import CLIENT_DISCONNECT, DELIVERED, STREAM_ERROR

__all__ = [
    "CLIENT_DISCONNECT",
    "DELIVERED",
    "DELIVERED_TOTAL",
    "DELIVERY_DURATION",
    "FAILURES_TOTAL",
    "METRIC_NAMES",
    "NAMESPACE",
    "SENDING",
    "SEND_DURATION",
    "SENT_BYTES_TOTAL",
    "STREAM_ERROR",
    "TIME_TO_FIRST_BYTE",
    "UNDELIVERED_DURATION",
    "sample",
]

NAMESPACE: Final = "django"
DELIVERED_TOTAL: Final = "django_http_responses_delivered_total"
FAILURES_TOTAL: Final = "django_http_response_delivery_failures_total"
DELIVERY_DURATION: Final = "django_http_delivery_duration_seconds"
SEND_DURATION: Final = "django_http_send_duration_seconds"
SENT_BYTES_TOTAL: Final = "django_http_response_sent_bytes_total"
SENDING: Final = "django_http_responses_sending"
TIME_TO_FIRST_BYTE: Final = "django_http_time_to_first_byte_seconds"
UNDELIVERED_DURATION: Final = "django_http_undelivered_duration_seconds"
#: Every metric family of the contract (histograms by their base name).
METRIC_NAMES: Final = (
    DELIVERED_TOTAL,
    FAILURES_TOTAL,
    DELIVERY_DURATION,
    SEND_DURATION,
    SENT_BYTES_TOTAL,
    SENDING,
    TIME_TO_FIRST_BYTE,
    UNDELIVERED_DURATION,
)


def sample(registry: CollectorRegistry, name: str, **labels: Any) -> float:
    """One sample of an in-process registry (0 when the series does not exist)."""
    value = registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})
    return 0.0 if value is None else value
