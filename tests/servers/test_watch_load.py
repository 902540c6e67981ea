"""A thousand watched requests in flight on one gunicorn gevent worker, then all clients leave.

Every request registers ``on_disconnect`` (the ``leave/`` view) and works for a few seconds;
while they are all in flight the worker's watcher thread must stay idle (it blocks in epoll),
and once every client resets, each callback must run once, promptly. The watcher's CPU is
read from ``/proc`` (the worker's threads other than its main one: gevent runs every request
on the main thread).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from tests.harness.clients import connect, new_test_id, request_bytes, reset
from tests.harness.records import wait_for_records
from tests.harness.servers import Server
from tests.harness.waiting import wait_for

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

IN_FLIGHT = 1000
#: How long each view works if nobody leaves: longer than connecting them all takes.
VIEW_SECONDS = 30
#: Every callback within this long of the last reset (loaded two-core machine).
BOUND = 5.0
#: The watcher's CPU while everything is in flight and then reported, at most.
CPU_BOUND = 0.5


def _ticks(pid: int, tid: int) -> int:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


def _other_threads_cpu(pid: int) -> float:
    """CPU seconds of the process's threads other than its main one."""
    ticks = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        if int(task) != pid:
            try:
                ticks += _ticks(pid, int(task))
            except FileNotFoundError:
                continue
    return ticks / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_a_thousand_watched_requests_then_all_leave(tmp_path: Path) -> None:
    pytest.importorskip("gevent")
    record = tmp_path / "records.jsonl"
    with Server(
        "gunicorn-gevent",
        record=record,
        log_dir=tmp_path,
        extra_args=("--worker-connections", str(IN_FLIGHT + 100)),
    ) as server:
        (worker,) = (
            int(pid)
            for pid in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        )
        before = _other_threads_cpu(worker)
        marker = tmp_path / "started"
        path = f"/leave/?seconds={VIEW_SECONDS}&marker={marker}"
        clients: list[socket.socket] = []
        ids: list[str] = []
        try:
            for _ in range(IN_FLIGHT):
                sock = connect(server.port)
                test_id = new_test_id()
                sock.sendall(request_bytes(server.port, path, test_id=test_id))
                clients.append(sock)
                ids.append(test_id)
            mine = set(ids)

            def registered() -> bool:
                # Each view appends a byte once its callback is registered.
                return marker.exists() and marker.stat().st_size >= IN_FLIGHT

            wait_for(registered, 120, what=f"{IN_FLIGHT} views to register")
            in_flight = _other_threads_cpu(worker) - before
        finally:
            left_at = time.time()
            for sock in clients:
                reset(sock)

        def left(record: dict[str, object]) -> bool:
            return record.get("kind") == "left" and record.get("test_id") in mine

        records = wait_for_records(record, IN_FLIGHT, 60, select=left)
        assert len({r["test_id"] for r in records}) == IN_FLIGHT == len(records)
        latest = max(float(r["at"]) for r in records)  # type: ignore[arg-type]
        assert latest - left_at <= BOUND, f"the last callback ran {latest - left_at:.2f} s late"
        total = _other_threads_cpu(worker) - before
    print(f"watcher CPU: {in_flight:.3f} s in flight, {total:.3f} s with all reported")
    assert total <= CPU_BOUND, f"{total:.2f} s of CPU outside the main thread"
