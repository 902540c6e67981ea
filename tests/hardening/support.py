"""Conventions of the hardening tests: one work directory per server (log, records and
multiprocess metrics under it), and what counts as an error report in a server log."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.harness.servers import Server

#: gunicorn's "the application raised" report, and uvicorn's.
SERVER_ERROR_REPORTS = re.compile(r"Error handling request|Exception in ASGI application")


def start(
    kind: str,
    workdir: Path,
    *,
    settings: str = "tests.settings",
    record: bool = True,
    multiprocess_dir: bool = False,
    workers: int | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    big_file: str | None = None,
) -> Server:
    """Start a server of the test project with the given settings module (and its logs,
    records and multiprocess directory under ``workdir``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    environment = dict(env or {})
    if big_file:
        environment["SENT_OTEL_TEST_FILE"] = big_file
    server = Server(
        kind,
        record=workdir / "records.jsonl" if record else None,
        workers=workers if workers is not None else (2 if kind.startswith("gunicorn") else 1),
        settings=settings,
        multiprocess_dir=workdir / "prometheus" if multiprocess_dir else None,
        env=environment,
        extra_args=extra_args,
        log_dir=workdir,
    )
    return server.start()


def server_error_reports(log: str) -> int:
    return len(SERVER_ERROR_REPORTS.findall(log))
