"""The context-manager protocol of everything the harness starts and stops."""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

S = TypeVar("S", bound="Started")


class Started:
    """``with thing:`` starts it (returning what ``start()`` returns) and always stops it."""

    def start(self: S) -> S:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
