"""Sections ``servers`` and ``file``: real servers under ``wrk``, as ratios to bare Django.

``servers``: requests/s against gunicorn (sync, 1 worker) and uvicorn, rounds interleaved
between the configurations' servers. ``file``: a large FileResponse through gunicorn:
throughput ratio and Python-level reads of the file (0 means sendfile, i.e. still zero-copy).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import configs, report, servers, targets
from benchmarks.options import Options
from benchmarks.report import Table
from benchmarks.runner import log, rotated


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
            names = configs.GUNICORN_CONFIGS if kind == "gunicorn" else configs.UVICORN_CONFIGS
            for name in names:
                started[(kind, name)] = servers.start(
                    kind, name, log_dir, SENT_OTEL_BENCH_FILE=file_path
                )
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


def tables(opts: Options, file_path: str, wrk_ok: bool) -> list[Table]:
    """The throughput table and the FileResponse table (either may be skipped)."""
    throughput = report.Table(
        f"Real servers: wrk -t{opts.wrk_threads} -c{opts.wrk_connections} "
        f"-d{max(1, round(opts.wrk_duration))}s",
        ["server", "configuration", "req/s", "ratio vs bare", "ratio range", "target", "result"],
    )
    size_mb = opts.file_size_mb
    file_table = report.Table(
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
    rows_server = [("gunicorn", n) for n in configs.GUNICORN_CONFIGS] + [
        ("uvicorn", n) for n in configs.UVICORN_CONFIGS
    ]
    if not wrk_ok:
        reason = report.skipped("wrk not installed")
        if run_servers:
            for kind, name in rows_server:
                throughput.rows.append(
                    report.Row("servers", f"{kind}/{name}", _server_cells(kind, name), "", reason)
                )
        if run_file:
            for name in configs.GUNICORN_CONFIGS:
                file_table.rows.append(report.Row("file", name, _file_cells(name), "", reason))
        return [throughput, file_table]

    kinds = ["gunicorn"] + (["uvicorn"] if run_servers else [])
    running = start_servers(kinds, opts, file_path)
    try:
        if run_servers:
            for kind in kinds:
                names = configs.GUNICORN_CONFIGS if kind == "gunicorn" else configs.UVICORN_CONFIGS
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
                    target_value = targets.SERVER_TARGET.get((kind, name))
                    target = "" if target_value is None else f">= {target_value:.2f}"
                    result = "" if target_value is None else report.verdict(ratio >= target_value)
                    result = _errors(results[name]) or result
                    cells = _server_cells(kind, name)
                    cells.update(
                        {
                            "req/s": f"{rps:.0f}",
                            "ratio vs bare": "1.00" if name == base else f"{ratio:.3f}",
                            "ratio range": "" if name == base else f"{low:.3f}-{high:.3f}",
                        }
                    )
                    throughput.rows.append(
                        report.Row("servers", f"{kind}/{name}", cells, target, result)
                    )
        if run_file:
            file_rounds = max(1, opts.wrk_rounds)
            results = _wrk_rounds(
                running,
                "gunicorn",
                configs.GUNICORN_CONFIGS,
                "/file/",
                file_rounds,
                opts.file_duration,
                1,
                opts,
            )
            size = os.path.getsize(file_path)
            for name in configs.GUNICORN_CONFIGS:
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
                    target = f">= {targets.FILE_TARGET:.2f}, 0 reads"
                    result = report.verdict(ratio >= targets.FILE_TARGET and reads == 0)
                elif reads != 0:
                    result = "ERROR: bare Django read the file (no sendfile?)"
                if reads < 0:
                    result = "ERROR: the checking download failed"
                result = _errors(results[name]) or result
                file_table.rows.append(report.Row("file", name, cells, target, result))
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
    return [throughput, file_table]


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
