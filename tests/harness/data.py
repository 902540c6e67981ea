"""Test data files shared by the views and the tests."""

from __future__ import annotations

import os

BIG_FILE_SIZE = 50 * 1024 * 1024
_BLOCK = 1024 * 1024


def ensure_big_file(path: str, size: int = BIG_FILE_SIZE) -> str:
    """Create ``path`` filled with zeros unless it already exists with exactly ``size`` bytes.

    Written to a temporary name and renamed, so concurrent callers never see a partial file.
    """
    try:
        if os.stat(path).st_size == size:
            return path
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    block = b"\0" * _BLOCK
    with open(partial, "wb") as f:
        remaining = size
        while remaining > 0:
            n = min(remaining, _BLOCK)
            f.write(block if n == _BLOCK else block[:n])
            remaining -= n
    os.replace(partial, path)
    return path
