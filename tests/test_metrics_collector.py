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

from django_sent_otel.delivery import Tracker, sending
from django_sent_otel.metrics import DeliveryMetrics, MetricsSink

ROOT = Path(__file__).resolve().parent.parent
THREADS = 8
PER_THREAD = 4000


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    """Switch threads as often as CPython allows, so unlocked updates would lose counts."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _deliver(sinks: list[Any], reason: str | None, size: int, returned: float | None) -> None:
    """One real tracker through the sinks: started at 0, handler returned at ``returned``
    (never, if None), finished at 0.2 (0.05 when delivered)."""
    tracker = Tracker("GET", sinks, started_at=0.0)
    if returned is not None:
        tracker.handler_returned("a/", 200, at=returned)
        tracker.headers_sent(at=0.02)  # the first byte: only a response that was made
    tracker.add_bytes(size)
    tracker.finish(reason, at=0.05 if reason is None else 0.2)


@pytest.mark.usefixtures("tiny_switch_interval")
def test_eight_threads_count_exactly() -> None:
    registry = CollectorRegistry()
    sinks: list[Any] = [MetricsSink(DeliveryMetrics(registry=registry, buckets=(0.1, 1.0)))]
    start = threading.Barrier(THREADS)
    scrapes: list[float] = []
    in_flight_before = sending()  # other tests' trackers that never finished

    def work(index: int) -> None:
        start.wait(timeout=30)
        for n in range(PER_THREAD):
            if n % 4 == 0:
                _deliver(sinks, "client_disconnect", 2, returned=0.1)
            else:
                _deliver(sinks, None, 3, returned=0.0)
            if n % 10 == 0:
                _deliver(sinks, "client_disconnect", 0, returned=None)  # before the handler
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
    assert value(f"{send}_bucket", **labels, le="0.1") == delivered
    assert value(f"{send}_count", **labels) == delivered
    assert value(f"{send}_sum", **labels) == pytest.approx(0.05 * delivered)
    first = "django_http_time_to_first_byte_seconds"
    assert value(f"{first}_bucket", **labels, le="0.1") == delivered + failures
    assert value(f"{first}_count", **labels) == delivered + failures
    assert value(f"{first}_sum", **labels) == pytest.approx(0.02 * (delivered + failures))
    assert not value(f"{first}_count", method="GET", route="unmatched")  # never got there
    gone = "django_http_undelivered_duration_seconds"
    assert value(f"{gone}_bucket", **labels, reason=reason, le="0.1") == 0
    assert value(f"{gone}_bucket", **labels, reason=reason, le="1.0") == failures
    assert value(f"{gone}_count", **labels, reason=reason) == failures
    assert value(f"{gone}_sum", **labels, reason=reason) == pytest.approx(0.2 * failures)
    unmatched = {"method": "GET", "route": "unmatched", "reason": reason}
    assert value(f"{gone}_count", **unmatched) == early_failures
    assert value("django_http_responses_sending") == in_flight_before
    assert scrapes and all(0 <= v - in_flight_before <= THREADS for v in scrapes)


@pytest.mark.usefixtures("tiny_switch_interval")
def test_in_flight_count_never_counts_finished_responses_under_thread_switches() -> None:
    """Each of four threads has at most one response in flight, so no reading may exceed four
    (reading the two counts one after the other once gave thousands: every response that
    ended while the reader was switched out)."""
    threads_n, per_thread = 4, 4000
    before = sending()
    start = threading.Barrier(threads_n + 1)

    def work() -> None:
        start.wait(timeout=30)
        for _ in range(per_thread):
            tracker = Tracker("GET", ())
            tracker.handler_returned("a/", 200)
            tracker.finish()

    workers = [threading.Thread(target=work) for _ in range(threads_n)]
    for worker in workers:
        worker.start()
    readings: list[int] = []
    start.wait(timeout=30)
    while any(worker.is_alive() for worker in workers) and len(readings) < 200_000:
        readings.append(sending() - before)
    for worker in workers:
        worker.join(timeout=120)
        assert not worker.is_alive()
    assert len(readings) > 100, "the workers finished before the reader read anything"
    assert max(readings) <= threads_n, max(readings)
    assert sending() == before


def test_in_flight_gauge_counts_returned_responses_only() -> None:
    registry = CollectorRegistry()
    sinks: list[Any] = [MetricsSink(DeliveryMetrics(registry=registry))]
    before = sending()
    trackers = [Tracker("GET", sinks) for _ in range(5)]
    for tracker in trackers:
        tracker.handler_returned("a/", 200)
    Tracker("GET", sinks).finish()  # never returned: not in flight
    for _ in range(3):  # scrapes read the counts without changing them
        assert registry.get_sample_value("django_http_responses_sending") == before + 5
    for done, tracker in enumerate(trackers, start=1):
        tracker.finish()
        assert registry.get_sample_value("django_http_responses_sending") == before + 5 - done
    assert (
        registry.get_sample_value(
            "django_http_responses_delivered_total",
            {"method": "GET", "route": "a/", "status": "200"},
        )
        == 5
    )


_GAUGE_WRITER = """
import sys, time
from prometheus_client import CollectorRegistry, multiprocess
from django_sent_otel.delivery import Tracker
from django_sent_otel.metrics import DeliveryMetrics, MetricsSink

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

sinks = [MetricsSink(DeliveryMetrics(registry=None))]
trackers = [Tracker("GET", sinks) for _ in range(3)]
for tracker in trackers:
    tracker.handler_returned("a/", 200)
wait_for(3.0)  # written by the worker's own thread: nobody scraped this process
for tracker in trackers:
    tracker.finish()
wait_for(0.0)
deadline = time.monotonic() + 30
while others_see_delivered() != 3.0:  # the counters too, by the same thread
    assert time.monotonic() < deadline, others_see_delivered()
    time.sleep(0.05)
Tracker("GET", sinks).handler_returned("a/", 200)
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
from django_sent_otel.delivery import Tracker
from django_sent_otel.metrics import DeliveryMetrics, MetricsSink

sink = MetricsSink(DeliveryMetrics(registry=None))
# The parent's response, in flight across the fork.
Tracker("GET", [sink]).handler_returned("a/", 200)
sink.metrics._lock.acquire()  # held by "another thread" of the parent at fork time
pid = os.fork()
if pid == 0:
    tracker = Tracker("GET", [sink])
    tracker.handler_returned("a/", 200)
    assert sink.metrics.sending() == 1, sink.metrics.sending()
    tracker.finish()
    assert sink.metrics.sending() == 0
    if len(sys.argv) > 1:  # multiprocess: the child's own writer thread runs
        Tracker("GET", [sink]).handler_returned("a/", 200)
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
