"""The package version: its one home (pyproject.toml reads it, the package root re-exports it)."""

from __future__ import annotations

__version__ = "0.1.0"
