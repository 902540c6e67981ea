"""Instructions per response of the metrics sink alone: ``python -m benchmarks.sink``.

Runs ``DeliveryMetrics.record`` (what ``MetricsSink.finished`` calls) on a delivered
response (with a sampled span every ``--sampled-every`` responses) under
``valgrind --tool=callgrind`` for two response counts; the difference of the totals over the
difference of the counts is the sink's cost per response, free of start-up.
``--variant per-thread`` measures the alternative design (one table per thread, summed at
scrape) that the single lock was chosen over; ``--wall`` times either with 8 threads
instead, in wall-clock seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_COLLECTED = re.compile(r"Collected : (\d+)")


class _Tracker:
    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span


def _per_thread_class() -> Any:
    from django_sent_otel.metrics import DeliveryMetrics

    class PerThreadMetrics(DeliveryMetrics):
        """Per-thread tables: no lock on the hot path, a merge at every scrape."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._local = threading.local()
            self._tables: list[dict[Any, list[Any]]] = []

        def _table(self) -> dict[Any, list[Any]]:
            table: dict[Any, list[Any]] = {}
            self._local.table = table
            with self._lock:
                self._tables.append(table)
            return table

        def record(self, delivery: Any, span: Any = None) -> None:
            _, reason, method, route, status_code, sent, duration, send = delivery
            try:
                table = self._local.table
            except AttributeError:
                table = self._table()
            key = (method, route, status_code, reason)
            row = table.get(key)
            if row is None:
                size = len(self.bounds)
                row = table[key] = [0, 0, 0.0, 0.0, [0] * size, [0] * size]
            row[0] += 1
            row[1] += sent
            if reason is None:
                bounds = self.bounds
                row[2] += duration
                row[4][bisect_left(bounds, duration)] += 1
                row[3] += send
                row[5][bisect_left(bounds, send)] += 1

    return PerThreadMetrics


def _sink(variant: str) -> Any:
    from prometheus_client import CollectorRegistry

    from django_sent_otel.metrics import DeliveryMetrics, MetricsSink

    cls = DeliveryMetrics if variant == "lock" else _per_thread_class()
    return MetricsSink(cls(registry=CollectorRegistry()))


def _responses(sink: Any, n: int, sampled_every: int) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from django_sent_otel.delivery import Delivery

    delivery = Delivery("delivered", None, "GET", "item/<int:pk>/", 200, 14, 0.0012, 0.0003)
    sampled = NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(TraceFlags.SAMPLED)))
    if sink is None:  # the baseline: the same loop without the sink's call
        for i in range(n):
            _Tracker(sampled if sampled_every and i % sampled_every == 0 else None)
        return
    record = sink.metrics.record
    for i in range(n):
        tracker = _Tracker(sampled if sampled_every and i % sampled_every == 0 else None)
        record(delivery, tracker.span)


def _instructions(valgrind: str, args: argparse.Namespace, n: int, baseline: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        command = [valgrind, "--tool=callgrind", f"--callgrind-out-file={tmp}/out"]
        command += [sys.executable, "-m", "benchmarks.sink", "--child", str(n)]
        command += ["--variant", args.variant, "--sampled-every", str(args.sampled_every)]
        if args.path:
            command += ["--path", args.path]
        if baseline:
            command.append("--baseline")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
        )
    match = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"callgrind run failed:\n{done.stderr[-3000:]}")
    return int(match.group(1))


def _wall(args: argparse.Namespace) -> None:
    sink = _sink(args.variant)
    threads = [
        threading.Thread(target=_responses, args=(sink, args.large, args.sampled_every))
        for _ in range(8)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    total = 8 * args.large
    print(f"{args.variant}: {elapsed / total * 1e6:.2f} us/response, {total} responses, 8 threads")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", choices=("lock", "per-thread"), default="lock")
    parser.add_argument("--sampled-every", type=int, default=0, help="0: no span")
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=12000)
    parser.add_argument("--path", help="import django_sent_otel from this directory first")
    parser.add_argument("--wall", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        if args.path:  # another checkout of the package, before an editable install's finder
            sys.path.insert(0, args.path)
            sys.meta_path[:] = [
                f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")
            ]
        sink = None if args.baseline else _sink(args.variant)
        _responses(sink, 200, args.sampled_every)  # first label set bound, code warm
        _responses(sink, args.child, args.sampled_every)
        return 0
    if args.wall:
        _wall(args)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is needed (Debian package valgrind)")
    per = []
    for baseline in (False, True):
        small = _instructions(valgrind, args, args.small, baseline)
        large = _instructions(valgrind, args, args.large, baseline)
        per.append((large - small) / (args.large - args.small))
    spans = f", a sampled span every {args.sampled_every}" if args.sampled_every else ""
    print(
        f"metrics sink ({args.variant}{spans}): {(per[0] - per[1]) / 1000:.2f}k "
        "instructions/response (handler_returned + finished)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
