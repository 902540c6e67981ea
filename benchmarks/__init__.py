"""Benchmarks of django-sent-otel against bare Django, run with ``python -m benchmarks``.

Every configuration runs in its own subprocess (settings differ) and the rounds are interleaved
round-robin, so slow drifts of a shared machine hit every configuration alike. Results are
ratios (or deltas) against bare Django measured in the same run. See ``python -m benchmarks
--help`` and :mod:`benchmarks.run`.
"""

from __future__ import annotations
