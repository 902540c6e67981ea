"""An example Django project using every setup line of django-sent-otel.

Run it with ``make demo`` (or ``python -m example.demo``): gunicorn with two workers, a short
traffic mix with real and aborted downloads, then a summary read from ``/metrics``.
"""

from __future__ import annotations
