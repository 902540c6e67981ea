"""Section ``metrics``: ``GET /metrics`` render time, single process and a 4-worker
multiprocess directory (:mod:`benchmarks.render` in a subprocess)."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from benchmarks import report, targets
from benchmarks.options import Options
from benchmarks.report import Table
from benchmarks.runner import log, run_json


def run_render(
    series: int | None, label_sets: int | None, multiprocess: bool, opts: Options
) -> dict[str, Any]:
    args = ["--renders", str(opts.renders)]
    if label_sets is not None:
        args += ["--label-sets", str(label_sets)]
    elif series is not None:
        args += ["--series", str(series)]
    tmp = tempfile.mkdtemp(prefix="sent-otel-multiproc-") if multiprocess else None
    try:
        env = {"PROMETHEUS_MULTIPROC_DIR": tmp} if tmp else {}
        return run_json("benchmarks.render", args, "plugin-metrics", env=env)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def tables(opts: Options) -> list[Table]:
    """Render times of /metrics, single process and multiprocess, by series and label sets."""
    table = report.Table(
        "GET /metrics render time (text format, through Django)",
        ["registry", "label sets", "series", "median ms", "min ms", "target", "result"],
    )
    cases: list[tuple[str, int | None, int | None, bool, bool]] = [
        (f"single process, {opts.series} series", opts.series, None, False, True),
        (f"multiprocess dir, 4 workers, {opts.series} series", opts.series, None, True, True),
        ("single process, 1000 label sets", None, 1000, False, False),
        ("multiprocess dir, 4 workers, 1000 label sets", None, 1000, True, False),
    ]
    for label, series, label_sets, multiprocess, targeted in cases:
        result = run_render(series, label_sets, multiprocess, opts)
        log(f"  /metrics {label}: {result['ms_median']:.1f} ms ({result['series']} series)")
        target = verdict_text = ""
        if targeted:
            target = f"<= {targets.METRICS_TARGET_MS:g} ms"
            verdict_text = report.verdict(result["ms_median"] <= targets.METRICS_TARGET_MS)
        table.rows.append(
            report.Row(
                "metrics",
                label,
                {
                    "registry": label,
                    "label sets": str(result["label_sets"]),
                    "series": str(result["series"]),
                    "median ms": report.fmt(result["ms_median"], 2),
                    "min ms": report.fmt(result["ms_min"], 2),
                },
                target,
                verdict_text,
            )
        )
    table.notes.append(
        "Series = exposed samples of the plugin's metrics (one label set of a delivered GET is "
        "44 series in a single process, 40 in multiprocess mode with the 16 default buckets). "
        f"{opts.renders} renders, median. Multiprocess: 4 worker processes wrote their "
        "files first; each scrape merges them with MultiProcessCollector."
    )
    return [table]
