"""Running benchmark subprocesses: a clean environment, JSON results, interleaved rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import configs

ROOT = Path(__file__).resolve().parent.parent
#: Inherited variables that would change what a benchmark subprocess measures.
FOREIGN_ENV = ("OTEL_", "PROMETHEUS_MULTIPROC", "SENT_OTEL_", "DJANGO_SETTINGS_MODULE")
SETTINGS = "benchmarks.settings"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_env(config: str, **extra: str) -> dict[str, str]:
    """The environment of a benchmark subprocess: no stray OTEL_* or Django settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            configs.ENV_VAR: config,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(extra)
    return env


def run_json(
    module: str,
    args: Sequence[str],
    config: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
) -> dict[str, Any]:
    """Run ``python -m module args`` for ``config``; its last stdout line is the JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=bench_env(config, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} for {config} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def rotated(items: Sequence[str], shift: int) -> list[str]:
    """``items`` started at ``shift``: round r runs the configurations in another order, so a
    slow drift of a shared machine hits every configuration alike."""
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])
