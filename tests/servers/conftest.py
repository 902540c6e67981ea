"""Fixtures of the real-server tests: one server process per kind and module, and its records.

``servers.get(kind)`` returns the running server of that kind (see ``accuracy.EXPECTED``),
starting it and stopping the previous one when the kind changes: ``tests/conftest.py`` orders
the tests kind by kind (each kind's cells as declared), so each server starts once, serves all
its cells and stops.
"""

from __future__ import annotations

import collections
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.harness.data import ensure_big_file
from tests.harness.proxy import TOPOLOGIES, Proxied, nginx_binary
from tests.harness.records import Record, read_records, wait_for_records
from tests.harness.servers import Server
from tests.harness.tools import need_binary

#: Generous: the machine is shared and a slow view takes 1.5 s before its record appears.
RECORD_TIMEOUT = 60.0
WORKERS = {"gunicorn-sync": 2, "gunicorn-gthread": 2}
SERVER_MODULES = {
    "gunicorn-sync": "gunicorn",
    "gunicorn-gthread": "gunicorn",
    "uvicorn": "uvicorn",
    "uvicorn-plain": "uvicorn",
    "daphne": "daphne",
    "hypercorn": "hypercorn",
    "waitress": "waitress",
    "runserver": "django",
    "granian-wsgi": "granian",
    "granian-asgi": "granian",
    "uwsgi": "uwsgidecorators",  # installed with uWSGI; ``uwsgi`` exists only inside it
    "uwsgi-threads": "uwsgidecorators",
    "gunicorn-gevent": "gevent",
    "gunicorn-uvicorn": "uvicorn_worker",
    "nginx-gunicorn": "gunicorn",
    "nginx-unbuffered": "gunicorn",
    "nginx-accel": "gunicorn",
    "nginx-uwsgi": "uwsgidecorators",
}
#: Log lines of the plugin that are expected (everything else it logs is a failure).
EXPECTED_LOG = re.compile(r"running under ASGI without the delivery wrapper")


class Running:
    """A started server, its record file and the requests sent to it (by test id)."""

    def __init__(self, kind: str, server: Server | Proxied, record: Path, workdir: Path) -> None:
        self.kind = kind
        self.server = server
        self.record = record
        self.workdir = workdir
        #: test id -> number of ``kind: "signal"`` records the request must leave (0 or 1).
        self.issued: dict[str, int] = {}
        #: test ids of requests that must also leave one ``kind: "callback"`` record.
        self.callbacks: set[str] = set()
        self.stopped = False

    @property
    def port(self) -> int:
        return self.server.port

    def expect(self, test_id: str, count: int = 1, *, callback: bool = False) -> None:
        self.issued[test_id] = count
        if callback:
            self.callbacks.add(test_id)

    def wait_record(self, test_id: str, kind: str = "signal") -> Record:
        """The one record of a request, waiting (bounded) for it to appear."""

        def select(record: Record) -> bool:
            return record.get("test_id") == test_id and record.get("kind") == kind

        try:
            records = wait_for_records(self.record, 1, RECORD_TIMEOUT, select=select)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.server.log_tail(60)}") from None
        assert len(records) == 1, f"{len(records)} {kind} records for one request: {records}"
        return records[0]

    def records(self) -> list[Record]:
        return read_records(self.record)

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.stop()

    def plugin_log_lines(self) -> list[str]:
        """Lines the plugin logged that no test expects."""
        return [
            line
            for line in self.server.log_text().splitlines()
            if "django-sent-otel:" in line and not EXPECTED_LOG.search(line)
        ]

    def check_one_record_each(self) -> None:
        """After the server stopped: every request left exactly the records it should."""
        assert self.stopped, "stop the server first: records may still be on their way"
        records = self.records()
        signals = collections.Counter(r["test_id"] for r in records if r["kind"] == "signal")
        callbacks = collections.Counter(r["test_id"] for r in records if r["kind"] == "callback")
        wrong = {
            test_id: (signals.get(test_id, 0), count)
            for test_id, count in self.issued.items()
            if signals.get(test_id, 0) != count
        }
        assert not wrong, f"test id -> (signal records, expected) on {self.kind}: {wrong}"
        stray = [r for r in records if r["test_id"] not in self.issued]
        assert not stray, f"records of requests no test sent on {self.kind}: {stray}"
        wrong_callbacks = {
            t: callbacks.get(t, 0)
            for t in self.issued
            if callbacks.get(t, 0) != int(t in self.callbacks)
        }
        assert not wrong_callbacks, f"callback records per test id: {wrong_callbacks}"


@pytest.fixture(scope="session")
def big_file() -> str:
    return ensure_big_file(settings.SENT_OTEL_TEST_FILE)


class ServerPool:
    """Starts servers on demand, one at a time: asking for another kind stops the current one.

    Tests ask for their server by kind, in collection order, so each kind starts once while
    its cells run; nothing depends on how pytest orders parametrized fixtures.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, big_file: str) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.big_file = big_file
        self.current: Running | None = None

    def get(self, kind: str, extra_args: tuple[str, ...] = ()) -> Running:
        """The running server of ``kind`` (started with ``extra_args``, for servers only)."""
        current = self.current
        if current is not None and current.kind == kind and not current.stopped:
            return current
        self.close()
        module = SERVER_MODULES[kind]
        if importlib.util.find_spec(module) is None:
            need_binary(None, f"{module} (for the {kind} server)")
        workdir = self.tmp_path_factory.mktemp(kind)
        record = workdir / "records.jsonl"
        instance: Server | Proxied
        if kind in TOPOLOGIES:
            need_binary(nginx_binary(), "nginx")
            instance = Proxied(
                kind,
                record=record,
                log_dir=workdir,
                env={"SENT_OTEL_TEST_FILE": self.big_file},
            )
            instance.start()
            self.current = Running(kind, instance, record, workdir)
            return self.current
        instance = Server(
            kind,
            record=record,
            workers=WORKERS.get(kind, 1),
            log_dir=workdir,
            env={"SENT_OTEL_TEST_FILE": self.big_file},
            extra_args=extra_args,
        )
        instance.start()
        self.current = Running(kind, instance, record, workdir)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, big_file: str) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory, big_file)
    try:
        yield pool
    finally:
        pool.close()
