"""Section ``inproc``: microseconds per request with no server, and the garbage collector.

WSGIHandler / ASGIHandler called directly (:mod:`benchmarks.inproc`), every configuration in a
fresh subprocess, rounds interleaved round-robin; garbage collections per 10k requests and
cyclic garbage per request come from the same runs.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import configs, report, targets
from benchmarks.options import Options
from benchmarks.report import Table
from benchmarks.runner import log, rotated, run_json


def _missing(section: str, name: str, modules: list[str]) -> report.Row:
    """The row of a configuration whose modules are not installed."""
    reason = report.skipped(f"{', '.join(modules)} not installed")
    return report.Row(section, name, {"configuration": configs.get(name).label}, "", reason)


def _args(requests: int, opts: Options) -> list[str]:
    return [
        "--requests",
        str(requests),
        "--warmup",
        str(opts.warmup),
        "--cycle-requests",
        str(opts.cycle_requests),
    ]


def tables(opts: Options) -> list[Table]:
    """The cost table and the garbage collector table, from the same interleaved runs."""
    names = configs.WSGI_CONFIGS + configs.ASGI_CONFIGS
    skipped = {name: configs.get(name).missing() for name in names}
    runnable = [name for name in names if not skipped[name]]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(opts.rounds):
        for name in rotated(runnable, r):
            requests = opts.asgi_requests if configs.get(name).asgi else opts.requests
            result = run_json("benchmarks.inproc", _args(requests, opts), name)
            results[name].append(result)
            log(
                f"  inproc round {r + 1}/{opts.rounds} {name:<20} "
                f"{result['us_per_request']:8.1f} us/req  cpu {result['cpu_us_per_request']:8.1f}"
            )

    def series(name: str, key: str) -> list[float]:
        return [float(res[key]) for res in results[name]]

    table = report.Table(
        "In-process cost per request (no server)",
        [
            "configuration",
            "us/req",
            "spread",
            "cpu us/req",
            "delta us",
            "delta cpu us",
            "vs",
            "ratio",
            "target",
            "result",
        ],
    )
    for name in names:
        if skipped[name]:
            table.rows.append(_missing("inproc", name, skipped[name]))
            continue
        wall = series(name, "us_per_request")
        cpu = series(name, "cpu_us_per_request")
        med = statistics.median(wall)
        spread = (max(wall) - min(wall)) / med * 100 if med else 0.0
        base = targets.INPROC_BASELINE.get(name)
        delta = delta_cpu = ratio = None
        if base is not None:
            base_wall = series(base, "us_per_request")
            base_cpu = series(base, "cpu_us_per_request")
            delta = statistics.median(a - b for a, b in zip(wall, base_wall, strict=True))
            delta_cpu = statistics.median(a - b for a, b in zip(cpu, base_cpu, strict=True))
            ratio = statistics.median(b / a for a, b in zip(wall, base_wall, strict=True))
        target_us = targets.INPROC_TARGET_US.get(name)
        checks = _checks(name, results[name])
        result = ""
        target = ""
        if target_us is not None and delta is not None:
            target = f"<= +{target_us:g} us"
            result = report.verdict(delta <= target_us)
        if checks:
            result = "ERROR: " + checks
        table.rows.append(
            report.Row(
                "inproc",
                name,
                {
                    "configuration": configs.get(name).label,
                    "us/req": report.fmt(med),
                    "spread": f"{spread:.0f}%",
                    "cpu us/req": report.fmt(statistics.median(cpu)),
                    "delta us": "" if delta is None else f"{delta:+.1f}",
                    "delta cpu us": "" if delta_cpu is None else f"{delta_cpu:+.1f}",
                    "vs": base or "",
                    "ratio": report.fmt(ratio, 2),
                },
                target,
                result,
            )
        )
    table.notes.append(
        f"{opts.requests} requests (ASGI: {opts.asgi_requests}) x {opts.rounds} interleaved rounds "
        "per configuration, each run in a fresh subprocess after "
        f"{opts.warmup} warm-up requests; median; spread = (max - min) / median; deltas and "
        "ratios are medians of per-round pairs with the baseline named in 'vs'."
    )
    table.notes.append(
        "WSGI: WSGIHandler with a minimal environ, response iterated and closed, trivial sync "
        "view. ASGI: ASGIHandler (behind DeliveryASGIMiddleware for the plugin) with a minimal "
        "scope/receive/send and an async view; its wall time includes Django's "
        "sync_to_async(response.close) thread hop, so compare the CPU columns there."
    )
    table.notes.append(
        "SDK = TracerProvider + BatchSpanProcessor + an exporter that only counts spans. The "
        "two 'floor' rows are not the plugin (benchmarks/floor.py): a close() hook recording 4 "
        "pre-bound prometheus_client children, and one SDK span with the 5 contract attributes; "
        "the plugin cannot cost less than these without changing how it records."
    )

    gc_table = report.Table(
        "Garbage collector (same runs)",
        [
            "configuration",
            "gen0 /10k",
            "gen1 /10k",
            "gen2 /10k",
            "cyclic objects /req",
            "vs",
            "target",
            "result",
        ],
    )
    gc_median: dict[str, list[float]] = {}
    for name in runnable:
        per_gen = [
            statistics.median(res["gc_per_10k"][g] for res in results[name]) for g in range(3)
        ]
        gc_median[name] = per_gen
    for name in names:
        if skipped[name]:
            gc_table.rows.append(_missing("gc", name, skipped[name]))
            continue
        per_gen = gc_median[name]
        cyclic = statistics.median(res["cyclic_objects_per_request"] for res in results[name])
        base = targets.INPROC_BASELINE.get(name, "")
        target = result = ""
        if name in targets.GC_SAME_AS_BASELINE and base:
            target = "gen2 = baseline, 0 cyclic"
            result = report.verdict(per_gen[2] <= gc_median[base][2] and cyclic == 0)
        elif name in targets.GC_NO_CYCLES:
            target = "0 cyclic"
            result = report.verdict(cyclic == 0)
        gc_table.rows.append(
            report.Row(
                "gc",
                name,
                {
                    "configuration": configs.get(name).label,
                    "gen0 /10k": report.fmt(per_gen[0]),
                    "gen1 /10k": report.fmt(per_gen[1]),
                    "gen2 /10k": report.fmt(per_gen[2]),
                    "cyclic objects /req": report.fmt(cyclic, 2),
                    "vs": base,
                },
                target,
                result,
            )
        )
    gc_table.notes.append(
        "Collections counted with gc.callbacks during the timed loop. Cyclic objects: "
        f"gc.collect() after {opts.cycle_requests} more requests with the collector disabled "
        "(anything found is garbage only the cycle collector frees). With the SDK, finished "
        "spans wait in the BatchSpanProcessor queue until exported, survive gen 0 and cause "
        "gen-1/gen-2 collections in every SDK configuration (compare "
        "opentelemetry-instrumentation-django alone): those rows are checked for cycles only."
    )
    return [table, gc_table]


def _checks(name: str, runs: list[dict[str, Any]]) -> str:
    """The configuration must do what it claims: every response tracked, one span each."""
    cfg = configs.get(name)
    problems = []
    for res in runs:
        tracked = res.get("tracked_fraction")
        if cfg.plugin and (tracked is None or abs(tracked - 1.0) > 1e-9):
            problems.append(f"tracked {tracked}")
        spans = res.get("spans_per_request")
        expected = (1 if cfg.plugin or name == "floor-span" else 0) + (1 if cfg.otel_django else 0)
        if cfg.sdk and (spans is None or abs(spans - expected) > 1e-9):
            problems.append(f"spans/req {spans} != {expected}")
    return ", ".join(sorted(set(problems)))
