"""``python -m benchmarks``: django-sent-otel against bare Django, measured in the same run.

Sections (each can be skipped):

- ``inproc``: microseconds per request with no server (WSGIHandler / ASGIHandler called
  directly), every configuration in a fresh subprocess, rounds interleaved round-robin;
  garbage collections per 10k requests and cyclic garbage per request come from the same runs.
- ``servers``: requests/s under ``wrk`` against gunicorn (sync, 1 worker) and uvicorn, as a
  ratio to bare Django, rounds interleaved between the configurations' servers.
- ``file``: a large FileResponse through gunicorn: throughput ratio and Python-level reads of
  the file (0 means sendfile, i.e. still zero-copy).
- ``metrics``: ``GET /metrics`` render time, single process and a 4-worker multiprocess dir.

Every row is printed with its target and PASS/MISS where the project set one, then everything
again as Markdown for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import configs, servers

SECTIONS = ("inproc", "servers", "file", "metrics")

WSGI_CONFIGS = (
    "bare",
    "plugin-metrics",
    "plugin-noop",
    "plugin-sdk",
    "django-prometheus",
    "otel-django",
    "otel-django-plugin",
    "floor-metrics",
    "floor-span",
)
ASGI_CONFIGS = ("asgi-bare", "asgi-plugin-metrics", "asgi-plugin-sdk")
GUNICORN_CONFIGS = ("bare", "plugin-metrics", "plugin-sdk")
UVICORN_CONFIGS = ("asgi-bare", "asgi-plugin-metrics", "asgi-plugin-sdk")

#: In-process rows: the configuration each is compared with, and its target (max delta, us).
INPROC_BASELINE = {
    "plugin-metrics": "bare",
    "plugin-noop": "bare",
    "plugin-sdk": "bare",
    "django-prometheus": "bare",
    "otel-django": "bare",
    "otel-django-plugin": "otel-django",
    "floor-metrics": "bare",
    "floor-span": "bare",
    "asgi-plugin-metrics": "asgi-bare",
    "asgi-plugin-sdk": "asgi-bare",
}
INPROC_TARGET_US = {
    "plugin-metrics": 4.0,
    "plugin-noop": 4.0,
    "plugin-sdk": 15.0,
    "otel-django-plugin": 15.0,
}
#: Configurations whose gen-2 collections must equal their baseline's (and leave no cycles).
GC_SAME_AS_BASELINE = ("plugin-metrics", "plugin-noop", "asgi-plugin-metrics")
#: SDK configurations: spans wait in the BatchSpanProcessor queue, survive gen 0 and cause
#: gen-1/gen-2 collections in any SDK set-up; these must leave no cyclic garbage.
GC_NO_CYCLES = ("plugin-sdk", "otel-django-plugin", "asgi-plugin-sdk")
SERVER_TARGET = {
    ("gunicorn", "plugin-metrics"): 0.97,
    ("gunicorn", "plugin-sdk"): 0.93,
    ("uvicorn", "asgi-plugin-metrics"): 0.97,
    ("uvicorn", "asgi-plugin-sdk"): 0.97,
}
FILE_TARGET = 0.98
METRICS_TARGET_MS = 20.0


@dataclass
class Options:
    quick: bool = False
    rounds: int = 5
    requests: int = 20_000
    asgi_requests: int = 5_000
    warmup: int = 1_000
    cycle_requests: int = 1_000
    wrk_rounds: int = 3
    wrk_duration: float = 5.0
    wrk_threads: int = 1
    wrk_connections: int = 8
    file_size_mb: int = 50
    file_duration: float = 3.0
    series: int = 1_000
    renders: int = 20
    sections: tuple[str, ...] = SECTIONS
    require_wrk: bool = False


@dataclass
class Row:
    section: str
    name: str
    cells: dict[str, str]
    target: str = ""
    result: str = ""  # PASS, MISS, SKIP, ERROR or ""


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def rotated(items: Sequence[str], shift: int) -> list[str]:
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


# -- in-process --------------------------------------------------------------------------------


def run_inproc_once(config: str, requests: int, opts: Options) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.inproc",
        "--requests",
        str(requests),
        "--warmup",
        str(opts.warmup),
        "--cycle-requests",
        str(opts.cycle_requests),
    ]
    done = subprocess.run(
        argv,
        cwd=servers.ROOT,
        env=servers.bench_env(config),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"in-process run of {config} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def inproc(opts: Options) -> tuple[Table, Table]:
    names = WSGI_CONFIGS + ASGI_CONFIGS
    skipped = {name: configs.get(name).missing() for name in names}
    runnable = [name for name in names if not skipped[name]]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(opts.rounds):
        for name in rotated(runnable, r):
            requests = opts.asgi_requests if configs.get(name).asgi else opts.requests
            result = run_inproc_once(name, requests, opts)
            results[name].append(result)
            log(
                f"  inproc round {r + 1}/{opts.rounds} {name:<20} "
                f"{result['us_per_request']:8.1f} us/req  cpu {result['cpu_us_per_request']:8.1f}"
            )

    def series(name: str, key: str) -> list[float]:
        return [float(res[key]) for res in results[name]]

    table = Table(
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
            reason = f"SKIP: {', '.join(skipped[name])} not installed"
            table.rows.append(
                Row("inproc", name, {"configuration": configs.get(name).label}, "", reason)
            )
            continue
        wall = series(name, "us_per_request")
        cpu = series(name, "cpu_us_per_request")
        med = statistics.median(wall)
        spread = (max(wall) - min(wall)) / med * 100 if med else 0.0
        base = INPROC_BASELINE.get(name)
        delta = delta_cpu = ratio = None
        if base is not None:
            base_wall = series(base, "us_per_request")
            base_cpu = series(base, "cpu_us_per_request")
            delta = statistics.median(a - b for a, b in zip(wall, base_wall, strict=True))
            delta_cpu = statistics.median(a - b for a, b in zip(cpu, base_cpu, strict=True))
            ratio = statistics.median(b / a for a, b in zip(wall, base_wall, strict=True))
        target_us = INPROC_TARGET_US.get(name)
        checks = _inproc_checks(name, results[name])
        result = ""
        target = ""
        if target_us is not None and delta is not None:
            target = f"<= +{target_us:g} us"
            result = verdict(delta <= target_us)
        if checks:
            result = "ERROR: " + checks
        table.rows.append(
            Row(
                "inproc",
                name,
                {
                    "configuration": configs.get(name).label,
                    "us/req": fmt(med),
                    "spread": f"{spread:.0f}%",
                    "cpu us/req": fmt(statistics.median(cpu)),
                    "delta us": "" if delta is None else f"{delta:+.1f}",
                    "delta cpu us": "" if delta_cpu is None else f"{delta_cpu:+.1f}",
                    "vs": base or "",
                    "ratio": fmt(ratio, 2),
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

    gc_table = Table(
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
            reason = f"SKIP: {', '.join(skipped[name])} not installed"
            gc_table.rows.append(
                Row("gc", name, {"configuration": configs.get(name).label}, "", reason)
            )
            continue
        per_gen = gc_median[name]
        cyclic = statistics.median(res["cyclic_objects_per_request"] for res in results[name])
        base = INPROC_BASELINE.get(name, "")
        target = result = ""
        if name in GC_SAME_AS_BASELINE and base:
            target = "gen2 = baseline, 0 cyclic"
            result = verdict(per_gen[2] <= gc_median[base][2] and cyclic == 0)
        elif name in GC_NO_CYCLES:
            target = "0 cyclic"
            result = verdict(cyclic == 0)
        gc_table.rows.append(
            Row(
                "gc",
                name,
                {
                    "configuration": configs.get(name).label,
                    "gen0 /10k": fmt(per_gen[0]),
                    "gen1 /10k": fmt(per_gen[1]),
                    "gen2 /10k": fmt(per_gen[2]),
                    "cyclic objects /req": fmt(cyclic, 2),
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
    return table, gc_table


def _inproc_checks(name: str, runs: list[dict[str, Any]]) -> str:
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


# -- real servers -----------------------------------------------------------------------------


@dataclass
class Running:
    servers: dict[tuple[str, str], servers.Server]
    log_dir: Path

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


def start_servers(kinds: Sequence[str], opts: Options, file_path: str) -> Running:
    log_dir = servers.log_dir()
    started: dict[tuple[str, str], servers.Server] = {}
    try:
        for kind in kinds:
            names = GUNICORN_CONFIGS if kind == "gunicorn" else UVICORN_CONFIGS
            for name in names:
                started[(kind, name)] = servers.start(
                    kind, name, log_dir, SENT_OTEL_BENCH_FILE=file_path
                )
        for (kind, _name), server in started.items():
            server.wait_ready("/" if kind == "gunicorn" else "/async/")
    except BaseException:
        for server in started.values():
            server.stop()
        raise
    return Running(started, log_dir)


def _wrk_rounds(
    running: Running,
    kind: str,
    names: Sequence[str],
    path: str,
    rounds: int,
    duration: float,
    connections: int,
    opts: Options,
) -> dict[str, list[servers.WrkResult]]:
    out: dict[str, list[servers.WrkResult]] = {name: [] for name in names}
    for r in range(rounds):
        for name in rotated(names, r):
            server = running.servers[(kind, name)]
            result = servers.run_wrk(
                server.url + path,
                threads=opts.wrk_threads,
                connections=connections,
                duration=duration,
            )
            out[name].append(result)
            log(
                f"  {kind} round {r + 1}/{rounds} {name:<20} {path:<8} "
                f"{result.requests_per_s:10.1f} req/s"
            )
    return out


def _ratio_cells(
    results: dict[str, list[servers.WrkResult]], name: str, base: str
) -> tuple[float, float, float, float]:
    rps = [r.requests_per_s for r in results[name]]
    base_rps = [r.requests_per_s for r in results[base]]
    ratios = [a / b for a, b in zip(rps, base_rps, strict=True)]
    return statistics.median(rps), statistics.median(ratios), min(ratios), max(ratios)


def _errors(results: Sequence[servers.WrkResult]) -> str:
    errors = sum(r.errors for r in results)
    non_2xx = sum(r.non_2xx for r in results)
    if errors or non_2xx:
        return f"ERROR: {errors} socket errors, {non_2xx} non-2xx"
    return ""


def server_tables(opts: Options, file_path: str, wrk_ok: bool) -> tuple[Table, Table]:
    throughput = Table(
        f"Real servers: wrk -t{opts.wrk_threads} -c{opts.wrk_connections} "
        f"-d{max(1, round(opts.wrk_duration))}s",
        ["server", "configuration", "req/s", "ratio vs bare", "ratio range", "target", "result"],
    )
    size_mb = opts.file_size_mb
    file_table = Table(
        f"{size_mb} MB FileResponse through gunicorn (sync, 1 worker, sendfile)",
        [
            "configuration",
            "downloads/s",
            "MB/s",
            "ratio vs bare",
            "python reads",
            "target",
            "result",
        ],
    )
    run_servers = "servers" in opts.sections
    run_file = "file" in opts.sections
    rows_server = [("gunicorn", n) for n in GUNICORN_CONFIGS] + [
        ("uvicorn", n) for n in UVICORN_CONFIGS
    ]
    if not wrk_ok:
        reason = "SKIP: wrk not installed"
        if run_servers:
            for kind, name in rows_server:
                throughput.rows.append(
                    Row("servers", f"{kind}/{name}", _server_cells(kind, name), "", reason)
                )
        if run_file:
            for name in GUNICORN_CONFIGS:
                file_table.rows.append(Row("file", name, _file_cells(name), "", reason))
        return throughput, file_table

    kinds = ["gunicorn"] + (["uvicorn"] if run_servers else [])
    running = start_servers(kinds, opts, file_path)
    try:
        if run_servers:
            for kind in kinds:
                names = GUNICORN_CONFIGS if kind == "gunicorn" else UVICORN_CONFIGS
                path = "/" if kind == "gunicorn" else "/async/"
                base = names[0]
                # Warm-up: one short run per server (imports, caches, the SDK's thread).
                _wrk_rounds(running, kind, names, path, 1, 1.0, opts.wrk_connections, opts)
                results = _wrk_rounds(
                    running,
                    kind,
                    names,
                    path,
                    opts.wrk_rounds,
                    opts.wrk_duration,
                    opts.wrk_connections,
                    opts,
                )
                for name in names:
                    rps, ratio, low, high = _ratio_cells(results, name, base)
                    target_value = SERVER_TARGET.get((kind, name))
                    target = "" if target_value is None else f">= {target_value:.2f}"
                    result = "" if target_value is None else verdict(ratio >= target_value)
                    result = _errors(results[name]) or result
                    cells = _server_cells(kind, name)
                    cells.update(
                        {
                            "req/s": f"{rps:.0f}",
                            "ratio vs bare": "1.00" if name == base else f"{ratio:.3f}",
                            "ratio range": "" if name == base else f"{low:.3f}-{high:.3f}",
                        }
                    )
                    throughput.rows.append(Row("servers", f"{kind}/{name}", cells, target, result))
        if run_file:
            file_rounds = max(1, opts.wrk_rounds)
            results = _wrk_rounds(
                running,
                "gunicorn",
                GUNICORN_CONFIGS,
                "/file/",
                file_rounds,
                opts.file_duration,
                1,
                opts,
            )
            size = os.path.getsize(file_path)
            for name in GUNICORN_CONFIGS:
                server = running.servers[("gunicorn", name)]
                reads = _reads_per_download(server, size)
                rps, ratio, low, high = _ratio_cells(results, name, "bare")
                cells = _file_cells(name)
                cells.update(
                    {
                        "downloads/s": f"{rps:.1f}",
                        "MB/s": f"{rps * size / 1e6:.0f}",
                        "ratio vs bare": "1.00" if name == "bare" else f"{ratio:.3f}",
                        "python reads": str(reads),
                    }
                )
                target = result = ""
                if name != "bare":
                    target = f">= {FILE_TARGET:.2f}, 0 reads"
                    result = verdict(ratio >= FILE_TARGET and reads == 0)
                elif reads != 0:
                    result = "ERROR: bare Django read the file (no sendfile?)"
                if reads < 0:
                    result = "ERROR: the checking download failed"
                result = _errors(results[name]) or result
                file_table.rows.append(Row("file", name, cells, target, result))
        problems = {
            f"{kind}/{name}": servers.server_errors(server)
            for (kind, name), server in running.servers.items()
        }
        for key, lines in problems.items():
            if lines:
                throughput.notes.append(f"server log of {key} mentions errors: {lines[:3]}")
    finally:
        running.stop()
    throughput.notes.append(
        "One server per configuration, all started first; wrk rounds interleaved round-robin "
        "after a 1 s warm-up each; ratio = median of per-round ratios to bare. gunicorn runs "
        "a trivial sync view, uvicorn (h11, asyncio) an async view through "
        "DeliveryASGIMiddleware. The SDK rows export to a counting exporter (no network)."
    )
    file_table.notes.append(
        "wrk -c1 on /file/; 'python reads' = read()/readinto() calls on the served file object "
        "in the worker during one more complete download (0 = os.sendfile did all the work)."
    )
    return throughput, file_table


def _file_reads(server: servers.Server) -> int:
    status, body = servers.http_get(server.port, "/file-reads/")
    return int(body) if status == 200 else -1


def _reads_per_download(server: servers.Server, size: int) -> int:
    """Python-level reads of the file during one complete download (-1: failed download).

    Measured around one clean download rather than over the wrk runs: when wrk stops, it cuts
    a download short, and if that happens before the first os.sendfile() call, Python's
    socket.sendfile() falls back to read() + send() once (stdlib behaviour, any app).
    """
    before = _file_reads(server)
    status, received = servers.download(server.port, "/file/")
    after = _file_reads(server)
    if status != 200 or received != size or before < 0 or after < 0:
        return -1
    return after - before


def _server_cells(kind: str, name: str) -> dict[str, str]:
    return {"server": kind, "configuration": configs.get(name).label}


def _file_cells(name: str) -> dict[str, str]:
    return {"configuration": configs.get(name).label}


# -- /metrics ---------------------------------------------------------------------------------


def run_render(
    series: int | None, label_sets: int | None, multiprocess: bool, opts: Options
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.render", "--renders", str(opts.renders)]
    if label_sets is not None:
        argv += ["--label-sets", str(label_sets)]
    elif series is not None:
        argv += ["--series", str(series)]
    tmp = tempfile.mkdtemp(prefix="sent-otel-multiproc-") if multiprocess else None
    extra = {"PROMETHEUS_MULTIPROC_DIR": tmp} if tmp else {}
    try:
        done = subprocess.run(
            argv,
            cwd=servers.ROOT,
            env=servers.bench_env("plugin-metrics", **extra),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"/metrics render failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def metrics_table(opts: Options) -> Table:
    table = Table(
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
            target = f"<= {METRICS_TARGET_MS:g} ms"
            verdict_text = verdict(result["ms_median"] <= METRICS_TARGET_MS)
        table.rows.append(
            Row(
                "metrics",
                label,
                {
                    "registry": label,
                    "label sets": str(result["label_sets"]),
                    "series": str(result["series"]),
                    "median ms": fmt(result["ms_median"], 2),
                    "min ms": fmt(result["ms_min"], 2),
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
    return table


# -- output -----------------------------------------------------------------------------------


def _cells(table: Table, row: Row) -> list[str]:
    values = [row.cells.get(col, "") for col in table.columns[:-2]]
    if table.columns[-2:] == ["target", "result"]:
        values += [row.target, row.result]
    return values


def render_text(table: Table) -> str:
    matrix = [table.columns] + [_cells(table, row) for row in table.rows]
    widths = [max(len(str(r[i])) for r in matrix) for i in range(len(table.columns))]
    lines = [table.title, "-" * len(table.title)]
    for i, row in enumerate(matrix):
        lines.append("  ".join(str(v).ljust(widths[j]) for j, v in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"  note: {note}" for note in table.notes]
    return "\n".join(lines)


def render_markdown(table: Table) -> str:
    lines = [f"**{table.title}**", ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in _cells(table, row)) + " |")
    lines.append("")
    lines += [note for note in table.notes]
    return "\n".join(lines)


def environment(opts: Options) -> list[str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    dists = (
        "django",
        "django-sent-otel",
        "prometheus-client",
        "opentelemetry-sdk",
        "opentelemetry-instrumentation-django",
        "django-prometheus",
        "gunicorn",
        "uvicorn",
    )
    return [
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        + ", ".join(f"{d} {version(d)}" for d in dists),
        f"{os.cpu_count()} CPUs, load average {load:.2f} at start, {platform.platform()}",
        "mode: " + ("quick (timings are not meaningful)" if opts.quick else "full"),
    ]


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
    opts = Options()
    if args.quick:
        opts = Options(
            quick=True,
            rounds=1,
            requests=300,
            asgi_requests=100,
            warmup=50,
            cycle_requests=100,
            wrk_rounds=1,
            wrk_duration=1.0,
            file_size_mb=4,
            file_duration=1.0,
            renders=2,
        )
    for key in (
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
    ):
        value = getattr(args, key)
        if value is not None:
            setattr(opts, key, value)
    sections = tuple(args.only) if args.only else SECTIONS
    opts.sections = tuple(s for s in sections if s not in args.skip)
    opts.require_wrk = args.require_wrk
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    header = environment(opts)
    for line in header:
        log(line)
    tables: list[Table] = []
    wrk_ok = servers.wrk_path() is not None
    if not wrk_ok and opts.require_wrk and {"servers", "file"} & set(opts.sections):
        log("wrk is required (CI=true or --require-wrk) but was not found")
        return 2

    steps: list[tuple[str, Callable[[], list[Table]]]] = []
    if "inproc" in opts.sections:
        steps.append(("in-process", lambda: list(inproc(opts))))
    if {"servers", "file"} & set(opts.sections):
        file_path = _bench_file(opts.file_size_mb)
        steps.append(("real servers", lambda: list(server_tables(opts, file_path, wrk_ok))))
    if "metrics" in opts.sections:
        steps.append(("/metrics", lambda: [metrics_table(opts)]))
    for title, step in steps:
        log(f"== {title}")
        tables.extend(step())

    print()
    for line in header:
        print(line)
    print()
    for table in tables:
        print(render_text(table))
        print()
    print("Markdown (for the README's Performance section)")
    print("-----------------------------------------------")
    print()
    print(
        "Measured with `"
        + " ".join(["python -m benchmarks", *(argv or sys.argv[1:])])
        + "`: "
        + "; ".join(header)
        + "."
    )
    print()
    for table in tables:
        print(render_markdown(table))
        print()
    misses = [row for table in tables for row in table.rows if row.result == "MISS"]
    errors = [row for table in tables for row in table.rows if row.result.startswith("ERROR")]
    print(
        f"Summary: {sum(r.result == 'PASS' for t in tables for r in t.rows)} PASS, "
        f"{len(misses)} MISS, {len(errors)} ERROR, "
        f"{sum(r.result.startswith('SKIP') for t in tables for r in t.rows)} SKIP "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 1 if errors else 0


def _bench_file(size_mb: int) -> str:
    from benchmarks.views import ensure_file

    path = os.path.join(tempfile.gettempdir(), f"sent-otel-bench-{size_mb}mb.bin")
    return ensure_file(path, size_mb * 1024 * 1024)
