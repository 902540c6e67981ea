"""gunicorn configuration of the example: ``gunicorn -c example/gunicorn.conf.py``.

Needs ``PROMETHEUS_MULTIPROC_DIR`` in the environment before gunicorn starts (the demo sets it
to a temporary directory): the workers then share their counters through that directory and
``/metrics`` returns the totals of all workers.
"""

from __future__ import annotations

from typing import Any

# docs/multi-worker.md shows this part, from here to "End of the documented part".
# Multiprocess mode: wipe the directory at start, drop dead workers' share of the in-flight
# gauge, write a worker's last numbers when it exits.
from django_sent_otel.gunicorn import child_exit, on_starting, worker_exit  # noqa: F401

bind = "127.0.0.1:8000"
workers = 2
# End of the documented part.

wsgi_app = "example.wsgi:application"
graceful_timeout = 10
loglevel = "info"
# gunicorn 24+ opens a control socket in the home directory by default: one per machine, so
# several example servers (demo, tests) would fight over it. Older versions ignore this name.
control_socket_disable = True

_write_metrics = worker_exit


def worker_exit(server: Any, worker: Any) -> None:
    """Write the worker's last metrics, then flush the example's spans, before it exits."""
    _write_metrics(server, worker)
    from example import otel

    otel.shutdown()
