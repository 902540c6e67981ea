"""The report model: tables of rows with a target and a result, printed as text and Markdown."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata

#: Versions printed in the header: what the figures depend on.
DISTRIBUTIONS = (
    "django",
    "django-sent-otel",
    "prometheus-client",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-django",
    "django-prometheus",
    "gunicorn",
    "uvicorn",
)
MARKDOWN_HEADING = "Markdown (for the docs' Performance page)"


@dataclass
class Row:
    section: str
    name: str
    cells: dict[str, str]
    target: str = ""
    result: str = ""  # PASS, MISS, SKIP..., ERROR... or ""


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def skipped(reason: str) -> str:
    return f"SKIP: {reason}"


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
    lines += list(table.notes)
    return "\n".join(lines)


def environment(quick: bool) -> list[str]:
    """The header lines: interpreter, versions, machine, mode."""

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        + ", ".join(f"{d} {version(d)}" for d in DISTRIBUTIONS),
        f"{os.cpu_count()} CPUs, load average {load:.2f} at start, {platform.platform()}",
        "mode: " + ("quick (timings are not meaningful)" if quick else "full"),
    ]


def print_report(
    header: Sequence[str], tables: Sequence[Table], command: str, seconds: float
) -> int:
    """Print every table as text, then as Markdown, then the summary; the exit status."""
    print()
    for line in header:
        print(line)
    print()
    for table in tables:
        print(render_text(table))
        print()
    print(MARKDOWN_HEADING)
    print("-" * len(MARKDOWN_HEADING))
    print()
    print(f"Measured with `{command}`: " + "; ".join(header) + ".")
    print()
    for table in tables:
        print(render_markdown(table))
        print()
    rows = [row for table in tables for row in table.rows]
    errors = sum(row.result.startswith("ERROR") for row in rows)
    print(
        f"Summary: {sum(r.result == 'PASS' for r in rows)} PASS, "
        f"{sum(r.result == 'MISS' for r in rows)} MISS, {errors} ERROR, "
        f"{sum(r.result.startswith('SKIP') for r in rows)} SKIP in {seconds:.0f} s"
    )
    return 1 if errors else 0
