"""Names and values shared by the settings, the delivery core and the sinks: label values,
OpenTelemetry attribute names, the default histogram buckets. A leaf: it imports nothing of
the package, so every layer may read it."""

from __future__ import annotations

from typing import Any, Final, Protocol

#: The ``route`` label when no URL pattern matched.
UNMATCHED: Final = "unmatched"
#: The ``method`` label of a method outside the standard set.
OTHER: Final = "other"

#: The metric name prefix: the default of ``SENT_OTEL_METRICS_NAMESPACE``.
DEFAULT_NAMESPACE: Final = "django"

#: OpenTelemetry's HTTP server duration buckets, extended for long downloads (seconds): the
#: default of ``SENT_OTEL_METRICS_BUCKETS``.
# fmt: off
DEFAULT_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)
# fmt: on

#: The semantic conventions version whose attribute names the span and metrics use.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.44.0"
#: ``delivered`` or the failure reason, in the package's own attribute namespace.
OUTCOME_ATTRIBUTE: Final = "django_sent_otel.delivery.outcome"
#: Seconds from request start until the client was known gone (set only then).
DISCONNECTED_AT_ATTRIBUTE: Final = "django_sent_otel.client.disconnected_at"
#: Seconds from request start until the first body byte (bodiless: the headers) was handed
#: to the server; left out when the response never got that far.
TIME_TO_FIRST_BYTE_ATTRIBUTE: Final = "django_sent_otel.response.time_to_first_byte"
#: Body chunks (ASGI body messages, WSGI iterations) handed to the server.
CHUNKS_ATTRIBUTE: Final = "django_sent_otel.response.chunks"
#: A method outside the standard set, as the HTTP conventions spell it.
OTHER_METHOD: Final = "_OTHER"


class _Labelled(Protocol):
    """What :func:`http_attributes` reads: a ``Delivery`` or a finished tracker."""

    @property
    def method(self) -> str: ...
    @property
    def route(self) -> str: ...
    @property
    def status_code(self) -> int: ...
    @property
    def reason(self) -> str | None: ...


def http_attributes(delivery: _Labelled) -> dict[str, Any]:
    """The HTTP convention attributes of a delivery (or of a finished tracker, which has the
    same fields); unknown values are left out (no route when no URL pattern matched, no status
    code when no response was made)."""
    method = delivery.method
    attributes: dict[str, Any] = {
        "http.request.method": OTHER_METHOD if method == OTHER else method
    }
    if delivery.route != UNMATCHED:
        attributes["http.route"] = delivery.route
    if delivery.status_code:
        attributes["http.response.status_code"] = delivery.status_code
    if delivery.reason is not None:
        attributes["error.type"] = delivery.reason
    return attributes
