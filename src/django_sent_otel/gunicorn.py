"""gunicorn server hooks for prometheus_client's multiprocess mode.

In ``gunicorn.conf.py``::

    from django_sent_otel.gunicorn import child_exit, on_starting, worker_exit  # noqa: F401

with ``PROMETHEUS_MULTIPROC_DIR`` set in the environment before gunicorn starts.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from .metrics import flush, multiprocess_dir


def on_starting(server: Any) -> None:
    """Wipe and recreate the multiprocess directory: stale files from a previous run would
    otherwise be summed into the new run's counters."""
    path = multiprocess_dir()
    if not path:
        raise RuntimeError(
            "django_sent_otel.gunicorn hooks need PROMETHEUS_MULTIPROC_DIR set before gunicorn "
            "starts"
        )
    if os.path.isdir(path):
        for entry in os.listdir(path):
            target = os.path.join(path, entry)
            if os.path.isdir(target):
                shutil.rmtree(target)
            else:
                os.remove(target)
    else:
        os.makedirs(path, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited (or was killed): keep its counters, drop its live gauge values."""
    from prometheus_client import multiprocess

    if multiprocess_dir():
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def worker_exit(server: Any, worker: Any) -> None:
    """A worker is exiting normally: write its last numbers before it goes (``atexit`` does
    too; this covers exits that skip it)."""
    flush()
