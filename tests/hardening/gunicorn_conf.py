"""gunicorn configuration of the hardening tests: prometheus_client multiprocess hooks."""

from __future__ import annotations

from django_sent_otel.gunicorn import child_exit, on_starting

__all__ = ["child_exit", "on_starting"]
