"""The metrics sink under threads, its in-flight gauge, and the multiprocess gauge writer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from django_sent_otel.delivery import Delivery
from django_sent_otel.metrics import DeliveryMetrics, MetricsSink

ROOT = Path(__file__).resolve().parent.parent
THREADS = 8
PER_THREAD = 4000


class Tracker:
    """What the sink reads of a tracker."""

    __slots__ = ("returned_at", "span")

    def __init__(self, returned_at: float | None) -> None:
        self.returned_at = returned_at
        self.span: Any = None


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    """Switch threads as often as CPython allows, so unlocked updates would lose counts."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("tiny_switch_interval")
def test_eight_threads_count_exactly() -> None:
    registry = CollectorRegistry()
    sink = MetricsSink(DeliveryMetrics(registry=registry, buckets=(0.1, 1.0)))
    ok = Delivery("delivered", None, "GET", "a/", 200, 3, 0.05, 0.5)
    failed = Delivery("client_disconnect", "client_disconnect", "GET", "a/", 200, 2, 0.2, 0.1)
    early = Delivery("client_disconnect", "client_disconnect", "GET", "unmatched", 0, 0, 0.2, 0.0)
    start = threading.Barrier(THREADS)
    scrapes: list[float] = []

    def work(index: int) -> None:
        start.wait(timeout=30)
        for n in range(PER_THREAD):
            returned = Tracker(1.0)
            sink.handler_returned(returned)
            sink.finished(returned, failed if n % 4 == 0 else ok)
            if n % 10 == 0:
                sink.finished(Tracker(None), early)  # ended before the handler returned
            if index == 0 and n % 500 == 0:
                scrapes.append(registry.get_sample_value("django_http_responses_sending") or 0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()

    total = THREADS * PER_THREAD
    failures, early_failures = total // 4, THREADS * (PER_THREAD // 10)
    delivered = total - failures
    labels = {"method": "GET", "route": "a/"}

    def value(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, extra)

    assert value("django_http_responses_delivered_total", **labels, status="200") == delivered
    reason = "client_disconnect"
    assert (
        value("django_http_response_delivery_failures_total", **labels, status="200", reason=reason)
        == failures
    )
    assert (
        value(
            "django_http_response_delivery_failures_total",
            method="GET",
            route="unmatched",
            status="0",
            reason=reason,
        )
        == early_failures
    )
    assert value("django_http_response_sent_bytes_total", **labels) == 3 * delivered + 2 * failures
    duration = "django_http_delivery_duration_seconds"
    assert value(f"{duration}_bucket", **labels, le="0.1") == delivered
    assert value(f"{duration}_count", **labels) == delivered
    assert value(f"{duration}_sum", **labels) == pytest.approx(0.05 * delivered)
    send = "django_http_send_duration_seconds"
    assert value(f"{send}_bucket", **labels, le="0.1") == 0
    assert value(f"{send}_bucket", **labels, le="1.0") == delivered
    assert value(f"{send}_sum", **labels) == 0.5 * delivered
    assert value("django_http_responses_sending") == 0
    assert scrapes and all(0 <= v <= THREADS for v in scrapes)


def test_in_flight_gauge_counts_returned_responses_only() -> None:
    registry = CollectorRegistry()
    sink = MetricsSink(DeliveryMetrics(registry=registry))
    delivery = Delivery("delivered", None, "GET", "a/", 200, 1, 0.1, 0.1)
    trackers = [Tracker(1.0) for _ in range(5)]
    for tracker in trackers:
        sink.handler_returned(tracker)
    sink.finished(Tracker(None), delivery)  # never returned: not in flight
    for _ in range(3):  # scrapes read the counts without changing them
        assert registry.get_sample_value("django_http_responses_sending") == 5
    for done, tracker in enumerate(trackers, start=1):
        sink.finished(tracker, delivery)
        assert registry.get_sample_value("django_http_responses_sending") == 5 - done


_GAUGE_WRITER = """
import sys, time
from prometheus_client import CollectorRegistry, multiprocess
from django_sent_otel.delivery import Delivery
from django_sent_otel.metrics import DeliveryMetrics, MetricsSink

class Tracker:
    returned_at = 1.0
    span = None

def others_see():
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry.get_sample_value("django_http_responses_sending")

def others_see_delivered():
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    labels = {"method": "GET", "route": "a/", "status": "200"}
    return registry.get_sample_value("django_http_responses_delivered_total", labels)

def wait_for(value):
    deadline = time.monotonic() + 30
    while others_see() != value:
        assert time.monotonic() < deadline, (value, others_see())
        time.sleep(0.05)

sink = MetricsSink(DeliveryMetrics(registry=None))
delivery = Delivery("delivered", None, "GET", "a/", 200, 1, 0.1, 0.1)
for _ in range(3):
    sink.handler_returned(Tracker())
wait_for(3.0)  # written by the worker's own thread: nobody scraped this process
for _ in range(3):
    sink.finished(Tracker(), delivery)
wait_for(0.0)
deadline = time.monotonic() + 30
while others_see_delivered() != 3.0:  # the counters too, by the same thread
    assert time.monotonic() < deadline, others_see_delivered()
    time.sleep(0.05)
sink.handler_returned(Tracker())
print("in flight at exit")
"""


def test_multiprocess_gauge_is_written_in_the_background_and_at_exit(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _GAUGE_WRITER],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "in flight at exit" in done.stdout
    # The exit hook wrote the last value: one response was still in flight.
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert registry.get_sample_value("django_http_responses_sending") == 1


_FORK = """
import os, sys, threading, time
from prometheus_client import CollectorRegistry, multiprocess
from django_sent_otel.delivery import Delivery
from django_sent_otel.metrics import DeliveryMetrics, MetricsSink

class Tracker:
    returned_at = 1.0
    span = None

sink = MetricsSink(DeliveryMetrics(registry=None))
sink.handler_returned(Tracker())  # the parent's response, in flight across the fork
sink.metrics._lock.acquire()  # held by "another thread" of the parent at fork time
pid = os.fork()
if pid == 0:
    sink.handler_returned(Tracker())
    assert sink.metrics.sending() == 1, sink.metrics.sending()
    sink.finished(Tracker(), Delivery("delivered", None, "GET", "a/", 200, 1, 0.1, 0.1))
    assert sink.metrics.sending() == 0
    if len(sys.argv) > 1:  # multiprocess: the child's own writer thread runs
        sink.handler_returned(Tracker())
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(sys.argv[1], f"gauge_livesum_{os.getpid()}.db")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    os._exit(0)
sink.metrics._lock.release()
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
print("child ok")
"""


@pytest.mark.parametrize("multiprocess", [False, True])
def test_forked_child_starts_clean(tmp_path: Path, multiprocess: bool) -> None:
    """gunicorn --preload and uWSGI fork after the application loaded: the child neither
    deadlocks on a lock held at fork time nor inherits the parent's in-flight responses."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    args = [sys.executable, "-c", _FORK]
    if multiprocess:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
        args.append(str(tmp_path))
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "child ok" in done.stdout, done.stderr


_KILLED = """
import os, signal
from django_sent_otel.delivery import Delivery
from django_sent_otel.metrics import DeliveryMetrics, flush

metrics = DeliveryMetrics(registry=None)
delivery = Delivery("delivered", None, "GET", "a/", 200, 10, 0.1, 0.1)
for _ in range(50):
    metrics.record(delivery)
flush()  # what the writer thread does every FLUSH_INTERVAL
for _ in range(7):
    metrics.record(delivery)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_loses_only_what_was_recorded_since_the_last_write(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED], env=env, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == -9, done.stderr
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    labels = {"method": "GET", "route": "a/", "status": "200"}
    assert registry.get_sample_value("django_http_responses_delivered_total", labels) == 50
    assert registry.get_sample_value("django_http_response_sent_bytes_total", labels) is None
    route = {"method": "GET", "route": "a/"}
    assert registry.get_sample_value("django_http_response_sent_bytes_total", route) == 500
    assert registry.get_sample_value("django_http_delivery_duration_seconds_count", route) == 50
