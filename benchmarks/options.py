"""How much a benchmark run measures: counts, durations and sections (``--quick`` shrinks them)."""

from __future__ import annotations

from dataclasses import dataclass

SECTIONS = ("inproc", "servers", "file", "metrics")


# A deliberate baseline of the repetition check: a field list repeats one shape line after
# line (name: type = number), here and in QUICK below; each default is still declared once.
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


#: ``--quick``: tiny counts that check the harness (timings are not meaningful).
QUICK = Options(
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
