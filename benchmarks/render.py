"""``GET /metrics`` render time, run in a fresh subprocess: ``python -m benchmarks.render``.

Fills the plugin's metrics with ``--label-sets`` delivered label sets (one route each), then
times ``GET /metrics`` through Django's ``WSGIHandler`` (the plugin's own view, text format).
With ``PROMETHEUS_MULTIPROC_DIR`` set, ``--workers`` child processes fill the directory first,
as gunicorn workers would, and the view merges their files on every scrape.
Prints one JSON object: median and minimum milliseconds, and the series the scrape returned.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import app


def series_per_label_set(buckets: int, multiprocess: bool) -> int:
    """Exposed series of one (method, route, status) label set of the plugin's metrics.

    Two counters (delivered, sent bytes) and two histograms (buckets + ``+Inf``, ``_count``,
    ``_sum``), each with a ``_created`` series outside multiprocess mode.
    """
    created = 0 if multiprocess else 1
    return 2 * (1 + created) + 2 * (buckets + 1 + 2 + created)


def label_sets_for(series: int, buckets: int, multiprocess: bool) -> int:
    return max(1, math.ceil((series - 1) / series_per_label_set(buckets, multiprocess)))


def populate(label_sets: int) -> None:
    from django_sent_otel.delivery import Delivery
    from django_sent_otel.pipeline import runtime

    metrics = runtime().metrics
    for i in range(label_sets):
        delivery = Delivery(
            outcome="delivered",
            reason=None,
            method="GET",
            route=f"bench/route-{i:05d}/<int:pk>/",
            status_code=200,
            bytes_sent=1234,
            duration=0.012,
            send_duration=0.001,
        )
        metrics.record(delivery)


def render_times(renders: int) -> tuple[list[float], int, int]:
    from benchmarks.inproc import _start_response, wsgi_environ

    handler = app.wsgi_application()
    times: list[float] = []
    body = b""
    for _ in range(renders + 1):
        environ = wsgi_environ("/metrics", HTTP_ACCEPT="text/plain")
        start = time.perf_counter()
        result = handler(environ, _start_response)
        body = b"".join(result)
        result.close()
        times.append((time.perf_counter() - start) * 1e3)
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    ours = sum(1 for line in lines if line.startswith("django_http_"))
    return times[1:], ours, len(lines)  # the first render builds the URL resolver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=1_000, help="target series of ours")
    parser.add_argument("--label-sets", type=int, default=None, help="overrides --series")
    parser.add_argument("--workers", type=int, default=4, help="multiprocess mode only")
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--populate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from django_sent_otel.conf import DEFAULT_BUCKETS

    multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    label_sets = args.label_sets or label_sets_for(args.series, len(DEFAULT_BUCKETS), multiprocess)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", app.SETTINGS_MODULE)
    if args.populate_only:
        import django

        django.setup()
        populate(label_sets)
        return 0
    if multiprocess:
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.render",
                    "--populate-only",
                    "--label-sets",
                    str(label_sets),
                ]
            )
            for _ in range(args.workers)
        ]
        for child in children:
            if child.wait(timeout=120) != 0:
                raise SystemExit("a populating worker failed")
    else:
        import django

        django.setup()
        populate(label_sets)
    times, ours, total = render_times(args.renders)
    result: dict[str, Any] = {
        "multiprocess": multiprocess,
        "workers": args.workers if multiprocess else 1,
        "label_sets": label_sets,
        "series": ours,
        "all_series": total,
        "ms_median": statistics.median(times),
        "ms_min": min(times),
        "ms_max": max(times),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
