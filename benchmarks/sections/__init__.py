"""One module per section of ``python -m benchmarks``; each returns its report tables."""

from __future__ import annotations
