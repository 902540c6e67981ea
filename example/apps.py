from __future__ import annotations

import json
import logging
import os
from typing import Any

from django.apps import AppConfig

from django_sent_otel.delivery import Delivery

logger = logging.getLogger("example.delivery")

#: When set (the demo sets it), every delivery is appended to this JSON Lines file.
DELIVERY_LOG_ENV = "EXAMPLE_DELIVERY_LOG"


def log_delivery(
    sender: Any, request: Any, response: Any, delivery: Delivery, **kwargs: Any
) -> None:
    """``response_delivered`` receiver: log failures, optionally record every outcome."""
    if not delivery.delivered:
        logger.warning(
            "%s %s (route %s) -> %s: %s after %d bytes, %.3f s",
            delivery.method,
            getattr(request, "path", "?"),
            delivery.route,
            delivery.status_code,
            delivery.outcome,
            delivery.bytes_sent,
            delivery.duration,
        )
    path = os.environ.get(DELIVERY_LOG_ENV)
    if path:
        record = {
            "pid": os.getpid(),
            "method": delivery.method,
            "route": delivery.route,
            "status": delivery.status_code,
            "outcome": delivery.outcome,
            "bytes": delivery.bytes_sent,
            "duration": round(delivery.duration, 6),
            "send_duration": round(delivery.send_duration, 6),
        }
        # One short append per line: lines from several workers never interleave.
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class ExampleConfig(AppConfig):
    name = "example"
    verbose_name = "django-sent-otel example"

    def ready(self) -> None:
        from django_sent_otel.signals import response_delivered

        response_delivered.connect(log_delivery, dispatch_uid="example.log_delivery")
