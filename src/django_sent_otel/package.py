"""What the instrumentor instruments, declared as OpenTelemetry's contrib instrumentors do."""

from __future__ import annotations

_instruments = ("django >= 5.2",)
_supports_metrics = True
