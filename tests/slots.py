"""Objects that settings name by dotted path; fixtures swap them per test."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

registry: CollectorRegistry = CollectorRegistry()
tracer_provider: Any = None
