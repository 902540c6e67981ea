"""Records every delivery as one JSON line in a file, for tests that run real servers.

With ``SENT_OTEL_TEST_RECORD=<path>`` in the environment, :class:`tests.apps.TestsConfig`
connects :func:`record_signal` to ``response_delivered``. Each line is appended with a single
``os.write`` on an ``O_APPEND`` descriptor, so lines from several worker processes and threads
never interleave. Tests read them back with :func:`read_records` / :func:`wait_for_records`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from tests.harness.clients import TEST_ID_HEADER
from tests.harness.waiting import wait_for

ENV_VAR = "SENT_OTEL_TEST_RECORD"
#: How Django's request.META names the clients' ``X-Test-Id`` header.
_META_KEY = "HTTP_" + TEST_ID_HEADER.upper().replace("-", "_")
FIELDS = (
    "outcome",
    "reason",
    "method",
    "route",
    "status_code",
    "bytes_sent",
    "duration",
    "send_duration",
    "time_to_first_byte",
    "chunks",
)

Record = dict[str, Any]


def record_path() -> str | None:
    return os.environ.get(ENV_VAR) or None


def request_test_id(request: Any) -> str | None:
    """The ``X-Test-Id`` header of a request (None without request or header)."""
    if request is None:
        return None
    meta = getattr(request, "META", None)
    if not meta:
        return None
    value = meta.get(_META_KEY)
    return str(value) if value else None


def file_reads_of(response: Any) -> int | None:
    """How often Python read the file of a FileResponse (``CountingFile.reads``), else None."""
    filelike = getattr(response, "file_to_stream", None)
    reads = getattr(filelike, "reads", None)
    return reads if isinstance(reads, int) else None


def append(path: str, record: Record) -> None:
    """Append one JSON line to ``path`` with a single write."""
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def delivery_record(delivery: Any, *, kind: str, test_id: str | None) -> Record:
    record: Record = {name: getattr(delivery, name, None) for name in FIELDS}
    record.update(kind=kind, test_id=test_id, pid=os.getpid())
    return record


def record_signal(
    sender: Any, request: Any = None, response: Any = None, delivery: Any = None, **kwargs: Any
) -> None:
    """``response_delivered`` receiver: one ``kind: "signal"`` line per delivery."""
    path = record_path()
    if not path:
        return
    record = delivery_record(delivery, kind="signal", test_id=request_test_id(request))
    record["file_reads"] = file_reads_of(response)
    append(path, record)


def connect(path: str | None = None) -> None:
    """Connect the recorder (idempotent). ``path`` overrides the environment variable."""
    from django_sent_otel.signals import response_delivered

    if path:
        os.environ[ENV_VAR] = path
    response_delivered.connect(record_signal, dispatch_uid="tests.harness.records")


def callback_for(request: Any) -> Callable[[Any], None]:
    """An ``on_delivered`` callback that records a ``kind: "callback"`` line."""
    test_id = request_test_id(request)

    def callback(delivery: Any) -> None:
        path = record_path()
        if path:
            append(path, delivery_record(delivery, kind="callback", test_id=test_id))

    return callback


# Reading side (used by the tests, not by the servers).


def read_records(path: str | os.PathLike[str]) -> list[Record]:
    """Every complete JSON line in ``path`` (missing file: none)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n"):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line still being written cannot happen with O_APPEND, but be safe
    return records


def wait_for_records(
    path: str | os.PathLike[str],
    predicate_or_count: Callable[[list[Record]], bool] | int,
    timeout: float = 30.0,
    *,
    select: Callable[[Record], bool] | None = None,
    interval: float = 0.02,
) -> list[Record]:
    """Poll ``path`` until the (selected) records satisfy the predicate or reach a count.

    With an int, waits for at least that many selected records. Returns the selected records;
    raises AssertionError with what was seen when the deadline passes.
    """
    if isinstance(predicate_or_count, int):
        count = predicate_or_count

        def done(records: list[Record]) -> bool:
            return len(records) >= count

        what = f"at least {count} record(s)"
    else:
        done = predicate_or_count
        what = getattr(predicate_or_count, "__name__", "the predicate")

    def selected() -> list[Record]:
        records = read_records(path)
        return records if select is None else [r for r in records if select(r)]

    def satisfied() -> tuple[list[Record]] | None:
        records = selected()
        # Wrapped: an empty list that satisfies the predicate must still end the wait.
        return (records,) if done(records) else None

    def last_ones() -> str:
        records = selected()
        shown = json.dumps(records[-20:], indent=1, sort_keys=True)
        return f"in {path}; {len(records)} matching record(s), last ones:\n{shown}"

    (records,) = wait_for(satisfied, timeout, what=what, interval=interval, details=last_ones)
    return records


def by_test_id(test_id: str, kind: str | None = "signal") -> Callable[[Record], bool]:
    """A ``select`` for :func:`wait_for_records`: records of one request (and kind)."""

    def select(record: Record) -> bool:
        return record.get("test_id") == test_id and (kind is None or record.get("kind") == kind)

    return select
