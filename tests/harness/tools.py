"""External programs the tests need (prometheus, promtool, nginx, valgrind, wrk...).

Locally a missing program skips the test with a reason; under ``CI=true`` it fails, so a CI
image that lost a tool cannot pass by skipping.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_TOOLS = os.environ.get("CI", "").lower() == "true"


def need_binary(path: str | None, name: str) -> None:
    """Skip when an external program is missing, but fail under CI=true."""
    if path:
        return
    if REQUIRE_TOOLS:
        pytest.fail(f"{name} is required under CI=true but was not found")
    pytest.skip(f"{name} is not installed")
