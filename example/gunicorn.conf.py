"""gunicorn configuration of the example: ``gunicorn -c example/gunicorn.conf.py``.

Needs ``PROMETHEUS_MULTIPROC_DIR`` in the environment before gunicorn starts (the demo sets it
to a temporary directory): the workers then share their counters through that directory and
``/metrics`` returns the totals of all workers.
"""

from __future__ import annotations

import os
from typing import Any

# Setup of the multiprocess mode: wipe the directory at start, forget dead workers' gauges.
from django_sent_otel.gunicorn import child_exit, on_starting  # noqa: F401

wsgi_app = "example.wsgi:application"
bind = os.environ.get("EXAMPLE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
graceful_timeout = 10
loglevel = "info"
# gunicorn 24+ opens a control socket in the home directory by default: one per machine, so
# several example servers (demo, tests) would fight over it. Older versions ignore this name.
control_socket_disable = True


def worker_exit(server: Any, worker: Any) -> None:
    """Write the worker's last metrics and flush its spans before it exits."""
    from django_sent_otel import gunicorn

    gunicorn.worker_exit(server, worker)
    from example import otel

    otel.shutdown()
