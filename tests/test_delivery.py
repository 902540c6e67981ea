"""The delivery core, with plain objects: one outcome per tracker, exactly once."""

from __future__ import annotations

import asyncio
import errno
import threading
from typing import Any

import pytest

from django_sent_otel.delivery import (
    CLIENT_DISCONNECT,
    DELIVERED,
    STREAM_ERROR,
    Delivery,
    Tracker,
    classify,
    is_bodiless,
    normalize_method,
    run_callbacks,
)


class Recorder:
    on_return = True

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def handler_returned(self, tracker: Tracker) -> None:
        self.events.append(("returned", tracker.status_code))

    def finished(self, tracker: Tracker) -> None:
        self.events.append(("finished", tracker.delivery))


class Exploding:
    on_return = True

    def handler_returned(self, tracker: Tracker) -> None:
        raise RuntimeError("sink bug")

    def finished(self, tracker: Tracker) -> None:
        raise RuntimeError("sink bug")


def test_delivered_with_durations() -> None:
    rec = Recorder()
    tracker = Tracker("GET", [rec], started_at=10.0)
    tracker.handler_returned(route="articles/<int:year>/", status_code=200, at=10.5)
    tracker.add_bytes(100)
    tracker.add_bytes(23)
    assert tracker.finish(at=11.25) is True
    delivery = tracker.delivery
    assert delivery == Delivery(
        outcome=DELIVERED,
        reason=None,
        method="GET",
        route="articles/<int:year>/",
        status_code=200,
        bytes_sent=123,
        duration=1.25,
        send_duration=0.75,
    )
    assert delivery.delivered
    assert rec.events == [("returned", 200), ("finished", delivery)]


def test_second_finish_is_a_no_op() -> None:
    rec = Recorder()
    tracker = Tracker("POST", [rec])
    tracker.handler_returned(route="x/", status_code=201)
    assert tracker.finish(CLIENT_DISCONNECT) is True
    assert tracker.delivery.outcome == tracker.outcome == CLIENT_DISCONNECT
    assert tracker.finish() is False
    assert tracker.finish(STREAM_ERROR) is False
    assert tracker.delivery.outcome == CLIENT_DISCONNECT
    assert [e for e, _ in rec.events] == ["returned", "finished"]
    assert tracker.done


def test_finish_from_many_threads_decides_once() -> None:
    for _ in range(50):
        rec = Recorder()
        tracker = Tracker("GET", [rec])
        barrier = threading.Barrier(4)

        def race(t: Tracker = tracker, b: threading.Barrier = barrier) -> None:
            b.wait()
            t.finish()

        threads = [threading.Thread(target=race) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert [e for e, _ in rec.events] == ["finished"]


def test_finish_before_handler_returned() -> None:
    rec = Recorder()
    tracker = Tracker("GET", [rec], started_at=1.0)
    assert tracker.finish(CLIENT_DISCONNECT, at=3.0)
    delivery = tracker.delivery
    assert (delivery.route, delivery.status_code) == ("unmatched", 0)
    assert (delivery.duration, delivery.send_duration) == (2.0, 0.0)
    # A late response (a sync view that kept running) changes nothing.
    tracker.handler_returned(route="late/", status_code=200)
    assert [e for e, _ in rec.events] == ["finished"]


def test_discard_means_no_outcome() -> None:
    rec = Recorder()
    tracker = Tracker("GET", [rec])
    tracker.discard()
    assert tracker.finish() is False
    assert rec.events == []


def test_references_are_dropped_after_finish() -> None:
    tracker = Tracker("GET", [Recorder()], request=object())
    tracker.handler_returned(route="a/", status_code=200, response=object())
    tracker.finish()
    assert tracker.request is None and tracker.response is None


def test_sink_exceptions_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    tracker = Tracker("GET", [Exploding(), rec])
    tracker.handler_returned(route="a/", status_code=200)
    assert tracker.finish()
    assert [e for e, _ in rec.events] == ["returned", "finished"]
    assert "sink bug" in caplog.text


def test_loggers_are_children_of_the_package_logger() -> None:
    """``getLogger(__name__)`` everywhere: a LOGGING entry for "django_sent_otel" still
    catches every record, and each record says which module wrote it."""
    import importlib
    import logging
    import pkgutil
    from pathlib import Path

    import django_sent_otel

    package = Path(django_sent_otel.__file__).parent
    for info in pkgutil.iter_modules([str(package)]):
        name = f"django_sent_otel.{info.name}"
        source = (package / f"{info.name}.py").read_text(encoding="utf-8")
        assert 'getLogger("' not in source, name
        logger = getattr(importlib.import_module(name), "logger", None)
        if logger is not None:
            assert logger.name == name

    class Failing(Exploding):  # a sink not seen failing before: its failure logs an error
        pass

    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    parent = logging.getLogger("django_sent_otel")
    parent.addHandler(handler)
    try:
        Tracker("GET", [Failing()]).finish()
    finally:
        parent.removeHandler(handler)
    assert "django_sent_otel.delivery" in {r.name for r in seen}


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("GET", "GET"),
        ("PATCH", "PATCH"),
        ("get", "GET"),
        ("Delete", "DELETE"),
        ("PROPFIND", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_method_labels_are_bounded(method: str, expected: str) -> None:
    assert normalize_method(method) == expected


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (None, None),
        (BrokenPipeError(), CLIENT_DISCONNECT),
        (ConnectionResetError(), CLIENT_DISCONNECT),
        (OSError(errno.EPIPE, "pipe"), CLIENT_DISCONNECT),
        (OSError(errno.ENOENT, "no file"), STREAM_ERROR),
        (asyncio.CancelledError(), CLIENT_DISCONNECT),
        (type("ClientDisconnected", (Exception,), {})(), CLIENT_DISCONNECT),
        (RuntimeError("view bug"), STREAM_ERROR),
    ],
)
def test_classify(exc: BaseException | None, reason: str | None) -> None:
    assert classify(exc) == reason


def test_bodiless() -> None:
    assert is_bodiless("HEAD", 200)
    assert is_bodiless("GET", 204)
    assert is_bodiless("GET", 304)
    assert is_bodiless("GET", 101)
    assert not is_bodiless("GET", 200)


def test_callbacks_run_in_order_and_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    tracker = Tracker("GET", [])
    assert tracker.finish()
    delivery = tracker.delivery

    def boom(d: Delivery) -> None:
        raise ValueError("callback bug")

    run_callbacks([lambda d: seen.append("a"), boom, lambda d: seen.append("b")], delivery)
    assert seen == ["a", "b"]
    assert "callback bug" in caplog.text
    run_callbacks([boom], delivery)  # fails again: logged once only
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "boom" in r.getMessage()]
    assert len(errors) == 1


def test_tracing_sink_does_nothing_until_an_sdk_provider_is_global(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from django_sent_otel.tracing import TracingSink

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = TracingSink(provider.get_tracer("test"), live=False)

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    tracker = Tracker("GET", [sink])
    tracker.handler_returned(route="a/", status_code=200)
    assert tracker.trace_start is None
    tracker.finish()
    assert exporter.get_finished_spans() == () and not sink.live

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    tracker = Tracker("GET", [sink])
    tracker.handler_returned(route="a/", status_code=200)
    tracker.finish()
    (span,) = exporter.get_finished_spans()
    assert sink.live
    assert span.attributes is not None and span.attributes["http.route"] == "a/"
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time <= span.end_time
