"""``benchmarks.wsgi:application`` for gunicorn (configuration from ``SENT_OTEL_BENCH_CONFIG``)."""

from __future__ import annotations

from benchmarks.app import wsgi_application

application = wsgi_application()
