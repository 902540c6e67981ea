"""Log a recurring problem once: a leaf every layer may use (the settings included)."""

from __future__ import annotations

import logging
from typing import Any

_logged: set[str] = set()


def log_once(
    log: logging.Logger, msg: str, *args: Any, key: str | None = None, error: bool = False
) -> None:
    """Log the first time ``key`` (default: ``msg``) is seen, as a warning or, with ``error``,
    the current exception; at DEBUG after that: a recurring problem never floods the logs."""
    key = key or msg
    if key in _logged:
        log.debug(msg, *args, exc_info=error)
        return
    _logged.add(key)
    if error:
        log.exception(msg, *args)
    else:
        log.warning(msg, *args)
