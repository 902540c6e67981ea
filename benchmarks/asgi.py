"""``benchmarks.asgi:application`` for uvicorn (configuration from ``SENT_OTEL_BENCH_CONFIG``)."""

from __future__ import annotations

from benchmarks.app import asgi_application

application = asgi_application()
