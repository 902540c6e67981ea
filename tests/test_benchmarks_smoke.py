"""``python -m benchmarks --quick`` still runs end to end and prints every row (never a time).

The quick mode uses tiny counts, so its numbers mean nothing; this test only keeps the harness
from rotting: every configuration, server, file, /metrics and garbage-collector row is printed in
the text tables and in the Markdown, the configurations did what they claim (the harness reports
ERROR when a plugin configuration did not track every request or export one span per request),
and the run exits 0. Without ``wrk`` the server sections are skipped, unless CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from benchmarks import chunk, configs
from benchmarks.configs import ASGI_CONFIGS, GUNICORN_CONFIGS, UVICORN_CONFIGS, WSGI_CONFIGS
from benchmarks.instructions import COUNT_FLOOR
from benchmarks.report import MARKDOWN_HEADING
from tests.harness.names import DELIVERED_TOTAL, SENT_BYTES_TOTAL, sample
from tests.harness.tools import REQUIRE_TOOLS, need_binary

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600


def label(name: str) -> str:
    return configs.get(name).label


def test_quick_benchmark_prints_every_row() -> None:
    have_wrk = shutil.which("wrk") is not None
    if not have_wrk and REQUIRE_TOOLS:
        pytest.fail("wrk is required under CI=true but was not found")
    argv = [sys.executable, "-m", "benchmarks", "--quick", "--requests", "200"]
    if not have_wrk:
        argv += ["--skip", "servers", "--skip", "file"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENT_OTEL_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    out = done.stdout
    text, _, markdown = out.partition(MARKDOWN_HEADING)
    assert markdown, out

    inproc_rows = [label(n) for n in WSGI_CONFIGS + ASGI_CONFIGS]
    expected_titles = [
        "In-process cost per request (no server)",
        "Garbage collector (same runs)",
        "GET /metrics render time",
    ]
    metric_rows = [
        "single process, 1000 series",
        "multiprocess dir, 4 workers, 1000 series",
        "single process, 1000 label sets",
        "multiprocess dir, 4 workers, 1000 label sets",
    ]
    server_rows: list[str] = []
    if have_wrk:
        expected_titles += ["Real servers: wrk", "FileResponse through gunicorn"]
        server_rows = [label(n) for n in GUNICORN_CONFIGS + UVICORN_CONFIGS]

    for title in expected_titles:
        assert title in text, title
        assert title in markdown, title
    for row in inproc_rows:
        # Once in the cost table and once in the garbage collector table.
        assert text.count(row) >= 2, row
        assert markdown.count(f"| {row} |") >= 2, row
    for row in metric_rows:
        assert row in text, row
        assert f"| {row} |" in markdown, row
    for row in server_rows:
        assert row in text, row
        assert row in markdown, row
    if have_wrk:
        # gunicorn rows appear in the throughput table and again in the FileResponse table.
        for name in GUNICORN_CONFIGS:
            assert markdown.count(label(name)) >= 2, name
        assert "python reads" in markdown
    assert "ERROR:" not in out
    assert " 0 ERROR," in out.rpartition("Summary:")[2]


@pytest.fixture(scope="module")
def instructions_output() -> str:
    """One tiny run of ``python -m benchmarks.instructions`` for every table: each callgrind
    run pays Django's start-up under valgrind, so one configuration per table (both ASGI floors
    and bare ASGI for the streaming section's comparisons), the two runs of a row side by side."""
    need_binary(shutil.which("valgrind"), "valgrind")
    argv = [sys.executable, "-m", "benchmarks.instructions", "--configs", "plugin-metrics"]
    argv += ["--routed-configs", "bare", "--stream-configs", *STREAM_NAMES]
    argv += ["--small", "50", "--large", "100", "--warmup", "5", "--jobs", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENT_OTEL_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


STREAM_NAMES = ["plugin-metrics", "asgi-bare", "asgi-floor-count", "asgi-plugin-metrics"]


def test_instruction_count_benchmark_runs(instructions_output: str) -> None:
    """``python -m benchmarks.instructions`` with tiny counts prints a positive count per row."""
    before_streams = instructions_output.partition("Streaming, measured with")[0]
    trivial, _, routed = before_streams.partition("requests of /item/42/)")
    assert "requests of /)" in trivial and routed
    for text, expected in ((trivial, {"plugin-metrics"}), (routed, {"bare"})):
        rows = [line for line in text.splitlines() if line.startswith("| ")]
        assert rows[0].startswith("| configuration |")
        values = {row.split(" | ")[0][2:]: float(row.split(" | ")[1]) for row in rows[1:]}
        assert set(values) == {label(name) for name in expected}
        assert all(value > 0 for value in values.values())


def test_instruction_count_streaming_rows(instructions_output: str) -> None:
    """The streaming section prints a row per configuration (WSGI and ASGI streams of 1 and
    100 chunks, the trivial ASGI view), the ASGI rows over bare ASGI, a verdict per ASGI
    target and, under them, the counting floor's cost per chunk over bare."""
    section = instructions_output.partition("Streaming, measured with")[2]
    assert section, instructions_output
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| configuration | 1-chunk stream")
    values = {row.split(" | ")[0][2:]: row.split(" | ")[1:] for row in rows[1:]}
    assert set(values) == {label(name) for name in STREAM_NAMES}
    for name in STREAM_NAMES:
        # With so few requests the figures mean nothing: they are numbers, the trivial ASGI
        # view has its column, and the ASGI rows but bare have their deltas over bare ASGI
        # (the WSGI row has no bare WSGI row to compare with here).
        one, per_chunk, trivial, over_request, over_chunk, over_trivial = (
            cell.strip(" |") for cell in values[label(name)]
        )
        float(one), float(per_chunk)
        assert (trivial != "") == name.startswith("asgi"), values
        compared = name.startswith("asgi") and name != "asgi-bare"
        assert all((cell != "") == compared for cell in (over_request, over_chunk, over_trivial))
    verdicts = [line for line in section.splitlines() if line.startswith("target ")]
    assert [line.partition(":")[0] for line in verdicts] == [
        "target asgi per chunk",
        "target asgi per request",
        "target asgi per request, trivial view",
    ]
    floor = [line for line in section.splitlines() if line.startswith(COUNT_FLOOR)]
    assert len(floor) == 1, section
    # The figure is the counting floor's per-chunk delta, as its row shows it.
    figure = floor[0].partition(": ")[2].partition("k per chunk")[0]
    assert figure == values[label("asgi-floor-count")][4].strip(" |"), (floor, values)


@pytest.mark.parametrize("server", chunk.SERVERS)
def test_message_benchmark_serves_through_the_plugin(
    server: str, registry: CollectorRegistry
) -> None:
    """``python -m benchmarks.chunk`` measures what it claims: behind real uvicorn and behind
    a plain send, every response is delivered through the plugin's wrapper with all of its
    bytes counted (the metrics are recorded when delivery ends, before the next request)."""
    run = (chunk.uvicorn_runner if server == "uvicorn" else chunk.plain_runner)(
        chunk.wrap("plugin", chunk.application(3))
    )
    run(2)
    labels = {"method": "GET", "route": "unmatched"}
    assert sample(registry, DELIVERED_TOTAL, status=200, **labels) == 2
    assert sample(registry, SENT_BYTES_TOTAL, **labels) == 2 * 3 * len(chunk.CHUNK)


def test_message_benchmark_runs_under_callgrind() -> None:
    """The per-message table, with tiny counts (one configuration, the numbers mean nothing)."""
    need_binary(shutil.which("valgrind"), "valgrind")
    argv = [sys.executable, "-m", "benchmarks.chunk", "--servers", "uvicorn"]
    argv += ["--wrappers", "plugin", "--requests", "2", "--chunks", "3", "--warmup", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENT_OTEL_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    rows = [line for line in done.stdout.splitlines() if line.startswith("| uvicorn |")]
    assert len(rows) == 1 and float(rows[0].split(" | ")[2]) > 0, done.stdout
