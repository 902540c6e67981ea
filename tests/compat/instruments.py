"""Measuring instruments of the compat servers: file reads under whitenoise, sentry's events.

Both run inside the server process and only observe: whitenoise still opens and serves its own
file (a raw file that counts Python-level reads, like the project's ``/file/`` view uses), and
sentry-sdk still builds and hands over its envelopes (to a transport that appends them to a
file instead of sending them).
"""

from __future__ import annotations

import os
from typing import Any

from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from tests.harness.records import append

SENTRY_FILE_ENV = "SENT_OTEL_COMPAT_SENTRY"
#: Nothing listens on the discard port: a DSN that could not send anywhere even if asked.
CLOSED_PORT = 9


def count_whitenoise_reads() -> None:
    """Make whitenoise open its files as ``CountingFile`` (its responder calls ``open``).

    A test asserts a count of 0 from the recorder's ``file_reads``: if whitenoise stopped
    opening files through that name the count would be missing and the test would fail.
    """
    import whitenoise.responders

    from tests.views import CountingFile

    def counting_open(path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> CountingFile:
        return CountingFile(path, mode)

    whitenoise.responders.open = counting_open  # type: ignore[attr-defined]


class RecordingTransport(Transport):
    """A sentry transport that appends every envelope's items to a JSON-lines file."""

    def capture_envelope(self, envelope: Envelope) -> None:
        path = os.environ.get(SENTRY_FILE_ENV)
        if not path:
            return
        for item in envelope.items:
            payload = item.payload.json
            if payload is None:
                continue
            append(path, {"type": item.type, "payload": payload})

    def flush(self, timeout: float, callback: Any = None) -> None:
        return None

    def kill(self) -> None:
        return None
