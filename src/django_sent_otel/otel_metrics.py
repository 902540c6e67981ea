"""OpenTelemetry metrics of delivery, through the OpenTelemetry metrics API only (opt-in).

The same facts as the Prometheus metrics, recorded into whatever ``MeterProvider`` the
application (or ``opentelemetry-instrument``) configured, so they leave by OTLP, the SDK's
Prometheus exporter or any other reader. Names live in the package's own namespace
(``django_sent_otel.*``): the semantic conventions own ``http.server.*``, and a name of ours
there could clash with a future convention. Attributes are the HTTP conventions' (bounded:
standard methods or ``_OTHER``, route templates, status codes, error types) plus one outcome
attribute in our namespace.
"""

from __future__ import annotations

import threading
from typing import Any, Final

from opentelemetry import metrics

from ._names import OUTCOME_ATTRIBUTE, SCHEMA_URL, http_attributes
from ._version import __version__
from .delivery import Delivery, Tracker

DELIVERED_RESPONSES: Final = "django_sent_otel.delivered.responses"
UNDELIVERED_RESPONSES: Final = "django_sent_otel.undelivered.responses"
DELIVERY_DURATION: Final = "django_sent_otel.delivery.duration"
SEND_DURATION: Final = "django_sent_otel.send.duration"
BODY_SENT: Final = "django_sent_otel.body.sent"
BODY_CHUNKS: Final = "django_sent_otel.body.chunks"
FIRST_BYTE_DURATION: Final = "django_sent_otel.first_byte.duration"
UNDELIVERED_DURATION: Final = "django_sent_otel.undelivered.duration"

#: The bucket advice of ``http.server.request.duration`` (HTTP semantic conventions), seconds.
HTTP_DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

_Key = tuple[str, str, int, str | None]


class OtelDeliveryMetrics:
    """The instruments of one meter provider (``None``: the global one)."""

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        meter = metrics.get_meter(
            "django_sent_otel",
            __version__,
            meter_provider=meter_provider,
            schema_url=SCHEMA_URL,
        )
        self.delivered = meter.create_counter(
            DELIVERED_RESPONSES,
            unit="{response}",
            description="Responses whose whole body was handed to the server.",
        )
        self.undelivered = meter.create_counter(
            UNDELIVERED_RESPONSES,
            unit="{response}",
            description="Responses not fully delivered; error.type is the reason.",
        )
        advice = list(HTTP_DURATION_BUCKETS)

        def seconds(name: str, description: str) -> Any:
            return meter.create_histogram(
                name, unit="s", description=description, explicit_bucket_boundaries_advisory=advice
            )

        self.duration = seconds(
            DELIVERY_DURATION, "Time from request start until the end of delivery."
        )
        self.send_duration = seconds(
            SEND_DURATION,
            "Time from the handler returning the response until the end of delivery.",
        )
        self.body_sent = meter.create_counter(
            BODY_SENT,
            unit="By",
            description="Response body bytes handed to the server, failed deliveries included.",
        )
        self.body_chunks = meter.create_counter(
            BODY_CHUNKS,
            unit="{chunk}",
            description="Response body chunks handed to the server, failed deliveries included.",
        )
        self.first_byte = seconds(
            FIRST_BYTE_DURATION,
            "Time from request start until the first body byte (bodiless: the headers) was "
            "handed to the server.",
        )
        self.undelivered_duration = seconds(
            UNDELIVERED_DURATION, "Time from request start until a delivery failure was known."
        )
        self._attributes: dict[_Key, dict[str, Any]] = {}

    def record(self, delivery: Delivery, *, returned: bool) -> None:
        """Record one finished delivery; the send phase only if the handler returned."""
        key = (delivery.method, delivery.route, delivery.status_code, delivery.reason)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = http_attributes(delivery)
            attributes[OUTCOME_ATTRIBUTE] = delivery.outcome
            self._attributes[key] = attributes  # bounded: the attributes are
        if delivery.reason is None:
            self.delivered.add(1, attributes)
        else:
            self.undelivered.add(1, attributes)
            self.undelivered_duration.record(delivery.duration, attributes)
        self.duration.record(delivery.duration, attributes)
        if returned:
            self.send_duration.record(delivery.send_duration, attributes)
        if delivery.time_to_first_byte is not None:
            self.first_byte.record(delivery.time_to_first_byte, attributes)
        self.body_sent.add(delivery.bytes_sent, attributes)
        self.body_chunks.add(delivery.chunks, attributes)


_cache: dict[int, tuple[Any, OtelDeliveryMetrics]] = {}
_cache_lock = threading.Lock()


def get_otel_metrics(meter_provider: metrics.MeterProvider | None) -> OtelDeliveryMetrics:
    """The instruments of a provider, created once (a settings reload reuses them: creating
    them again would make the SDK warn about duplicate instruments)."""
    key = id(meter_provider)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is None or cached[0] is not meter_provider:
            cached = (meter_provider, OtelDeliveryMetrics(meter_provider))
            _cache[key] = cached
        return cached[1]


class OtelMetricsSink:
    """Records each finished delivery as OpenTelemetry measurements."""

    __slots__ = ("metrics",)
    on_return = False  # nothing to do when the handler returns

    def __init__(self, otel_metrics: OtelDeliveryMetrics) -> None:
        self.metrics = otel_metrics

    def handler_returned(self, tracker: Tracker) -> None:
        return None

    def finished(self, tracker: Tracker) -> None:
        self.metrics.record(tracker.delivery, returned=tracker.returned_at is not None)
