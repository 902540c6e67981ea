"""``python -m benchmarks``: django-sent-otel against bare Django, measured in the same run.

Sections (each can be skipped), one module each under ``benchmarks/sections/``:

- ``inproc``: microseconds per request with no server (WSGIHandler / ASGIHandler called
  directly), every configuration in a fresh subprocess, rounds interleaved round-robin;
  garbage collections per 10k requests and cyclic garbage per request come from the same runs.
- ``servers``: requests/s under ``wrk`` against gunicorn (sync, 1 worker) and uvicorn, as a
  ratio to bare Django, rounds interleaved between the configurations' servers.
- ``file``: a large FileResponse through gunicorn: throughput ratio and Python-level reads of
  the file (0 means sendfile, i.e. still zero-copy).
- ``metrics``: ``GET /metrics`` render time, single process and a 4-worker multiprocess dir.

Every row is printed with its target and PASS/MISS where the project set one (see
``benchmarks/targets.py``), then everything again as Markdown for docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from benchmarks import report, servers
from benchmarks.options import QUICK, SECTIONS, Options
from benchmarks.report import Table
from benchmarks.runner import log
from benchmarks.sections import inproc, metrics
from benchmarks.sections import servers as server_sections
from tests.harness.data import ensure_big_file

#: Options that a command-line flag of the same name (dashes for underscores) overrides.
OVERRIDABLE = (
    "rounds",
    "requests",
    "asgi_requests",
    "warmup",
    "wrk_rounds",
    "wrk_duration",
    "wrk_connections",
    "file_size_mb",
    "file_duration",
    "series",
    "renders",
)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks the harness")
    parser.add_argument("--rounds", type=int, help="in-process rounds (default 5)")
    parser.add_argument("--requests", type=int, help="in-process WSGI requests per run (20000)")
    parser.add_argument("--asgi-requests", type=int, help="in-process ASGI requests per run (5000)")
    parser.add_argument("--warmup", type=int, help="warm-up requests per run (1000)")
    parser.add_argument("--wrk-rounds", type=int, help="wrk rounds per configuration (3)")
    parser.add_argument("--wrk-duration", type=float, help="seconds per wrk run (5)")
    parser.add_argument("--wrk-connections", type=int, help="wrk connections (8)")
    parser.add_argument("--file-size-mb", type=int, help="FileResponse size in MB (50)")
    parser.add_argument("--file-duration", type=float, help="seconds per file wrk run (3)")
    parser.add_argument("--series", type=int, help="/metrics series (1000)")
    parser.add_argument("--renders", type=int, help="/metrics renders per case (20)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)"
    )
    parser.add_argument(
        "--skip", action="append", choices=SECTIONS, default=[], help="skip a section"
    )
    parser.add_argument(
        "--require-wrk",
        action="store_true",
        default=os.environ.get("CI", "").lower() == "true",
        help="fail instead of skipping when wrk is missing (default under CI=true)",
    )
    args = parser.parse_args(argv)
    given = {key: getattr(args, key) for key in OVERRIDABLE if getattr(args, key) is not None}
    sections = tuple(args.only) if args.only else SECTIONS
    return dataclasses.replace(
        QUICK if args.quick else Options(),
        **given,
        sections=tuple(s for s in sections if s not in args.skip),
        require_wrk=args.require_wrk,
    )


def bench_file(size_mb: int) -> str:
    path = os.path.join(tempfile.gettempdir(), f"sent-otel-bench-{size_mb}mb.bin")
    return ensure_big_file(path, size_mb * 1024 * 1024)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    header = report.environment(opts.quick)
    for line in header:
        log(line)
    wrk_ok = servers.wrk_path() is not None
    if not wrk_ok and opts.require_wrk and {"servers", "file"} & set(opts.sections):
        log("wrk is required (CI=true or --require-wrk) but was not found")
        return 2

    steps: list[tuple[str, Callable[[], list[Table]]]] = []
    if "inproc" in opts.sections:
        steps.append(("in-process", lambda: inproc.tables(opts)))
    if {"servers", "file"} & set(opts.sections):
        path = bench_file(opts.file_size_mb)
        steps.append(("real servers", lambda: server_sections.tables(opts, path, wrk_ok)))
    if "metrics" in opts.sections:
        steps.append(("/metrics", lambda: metrics.tables(opts)))
    tables: list[Table] = []
    for title, step in steps:
        log(f"== {title}")
        tables.extend(step())
    command = " ".join(["python -m benchmarks", *(argv or sys.argv[1:])])
    return report.print_report(header, tables, command, time.monotonic() - started)
