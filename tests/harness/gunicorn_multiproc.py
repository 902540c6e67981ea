"""gunicorn config of the multiprocess test servers: the package's hooks and a readiness mark.

``PROMETHEUS_MULTIPROC_DIR`` comes from the environment; bind and workers from the command line.
With ``SENT_OTEL_TEST_READY_DIR`` set, each worker creates ``<dir>/<pid>`` once it has loaded
the application, so a test can wait until every worker really serves (the harness's readiness
check only proves that one of them does).
"""

from __future__ import annotations

import os
from typing import Any

from django_sent_otel.gunicorn import child_exit, on_starting, worker_exit

__all__ = ["child_exit", "on_starting", "post_worker_init", "worker_exit"]


def post_worker_init(worker: Any) -> None:
    ready = os.environ.get("SENT_OTEL_TEST_READY_DIR")
    if ready:
        with open(os.path.join(ready, str(os.getpid())), "w"):
            pass
