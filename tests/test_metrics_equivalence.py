"""The collector's scrapes equal those of the previous design, sample by sample.

The same traffic (deliveries and failures on several methods, routes and statuses, durations on
and around every bucket bound, sampled, unsampled and absent spans) is recorded by
:class:`DeliveryMetrics` and by the reference (one prometheus_client child per series,
``tests/harness/metrics_reference.py``) on two registries. The text and OpenMetrics expositions
must be equal line by line, once the two values that cannot be equal are masked: ``_created``
timestamps and exemplar timestamps (each implementation reads the clock when it first sees a
series). Multiprocess mode is compared in fresh interpreters, through prometheus_client's
``MultiProcessCollector``.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import (
    CollectorRegistry,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from django_sent_otel import metrics as metrics_module
from django_sent_otel.conf import DEFAULT_BUCKETS
from django_sent_otel.delivery import Delivery, sending
from django_sent_otel.metrics import DeliveryMetrics
from tests.harness.metrics_reference import ReferenceMetrics

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ("a/", "articles/<int:year>/", "unmatched", "files/<path:name>")
METHODS = ("GET", "POST", "HEAD", "other")
STATUSES = (200, 201, 204, 304, 404, 500)
REASONS = (None, None, None, "client_disconnect", "stream_error")


def traffic(count: int, seed: int, buckets: Sequence[float]) -> list[tuple[Delivery, Any]]:
    """Deliveries with durations on, just around and far from each bound, and their spans."""
    rng = random.Random(seed)
    bounds = [float(b) for b in buckets]
    values = [0.0, *bounds, *(b * 0.999 for b in bounds), *(b * 1.001 for b in bounds), 1e4]
    out: list[tuple[Delivery, Any]] = []
    for _ in range(count):
        reason = rng.choice(REASONS)
        duration = rng.choice(values) if rng.random() < 0.5 else rng.uniform(0, 70)
        send = min(duration, rng.choice(values) if rng.random() < 0.5 else rng.random())
        # No first byte for some (the client left before it), else within the duration.
        first = None if rng.random() < 0.2 else min(duration, rng.choice(values))
        delivery = Delivery(
            reason or "delivered",
            reason,
            rng.choice(METHODS),
            rng.choice(ROUTES),
            rng.choice(STATUSES),
            rng.randrange(0, 1 << 20),
            duration,
            send,
            first,
            rng.randrange(0, 100),
        )
        kind = rng.random()
        span = None
        if kind < 0.6:
            flags = TraceFlags(TraceFlags.SAMPLED if kind < 0.45 else TraceFlags.DEFAULT)
            context = SpanContext(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, False, flags)
            span = NonRecordingSpan(context)
        out.append((delivery, span))
    return out


_CREATED = re.compile(r"^(\S+_created(?:\{[^}]*\})?) \S+$", re.MULTILINE)
_EXEMPLAR_TS = re.compile(r"(# \{[^}]*\} \S+) \S+$", re.MULTILINE)


def masked(text: bytes) -> list[str]:
    """The exposition's lines, with _created values and exemplar timestamps masked."""
    out = _CREATED.sub(r"\1 <created>", text.decode())
    return _EXEMPLAR_TS.sub(r"\1 <time>", out).splitlines()


def families(text: bytes) -> list[str]:
    """The masked exposition's family blocks, sorted."""
    blocks = "\n".join(masked(text)).replace("\n# EOF", "").split("# HELP ")
    return sorted(block.strip() for block in blocks if block.strip())


def both(
    deliveries: list[tuple[Delivery, Any]],
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    namespace: str = "django",
    interval: float = 1.0,
) -> tuple[CollectorRegistry, CollectorRegistry]:
    new, old = CollectorRegistry(), CollectorRegistry()
    metrics = DeliveryMetrics(registry=new, namespace=namespace, buckets=buckets)
    reference = ReferenceMetrics(old, namespace=namespace, buckets=buckets, interval=interval)
    for delivery, span in deliveries:
        metrics.record(delivery, span)
        reference.record(delivery, span)
    # The in-flight gauge counts every tracker of the process (other tests' open ones too).
    reference.sending.inc(sending())
    return new, old


@pytest.fixture
def interval(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> float:
    """The exemplar interval for both implementations: keep the first (3600 s) or the last
    (0 s) exemplar of each series, so no clock tick can make them differ."""
    value: float = request.param
    monkeypatch.setattr(metrics_module, "EXEMPLAR_INTERVAL", value)
    return value


def assert_same(new: Any, old: Any) -> None:
    for encode in (generate_latest, openmetrics_latest):
        got, want = masked(encode(new)), masked(encode(old))
        assert got == want, "\n".join(
            f"{'new' if i == 0 else 'old'}: {line}"
            for i, lines in enumerate((got, want))
            for line in lines
            if line not in (want if i == 0 else got)
        )


@pytest.mark.parametrize("interval", [3600.0, 0.0], indirect=True)
@pytest.mark.parametrize("seed", [1, 2])
def test_same_exposition_as_the_previous_design(interval: float, seed: int) -> None:
    deliveries = traffic(3000, seed, DEFAULT_BUCKETS)
    new, old = both(deliveries, interval=interval)
    text = openmetrics_latest(new).decode()
    # The traffic reaches what the comparison is about: every kind of series, and exemplars.
    assert "client_disconnect" in text and "stream_error" in text and 'le="+Inf"' in text
    assert text.count("trace_id") >= 3 * len(ROUTES)
    assert_same(new, old)


@pytest.mark.parametrize("interval", [3600.0], indirect=True)
@pytest.mark.parametrize(
    ("buckets", "namespace"),
    [
        ((0.1, 1.0), "shop"),
        ((0.5, 2.5, float("inf")), ""),
        (tuple(i / 10 for i in range(1, 151)), "x"),
    ],
)
def test_same_exposition_with_other_buckets_and_namespaces(
    interval: float, buckets: tuple[float, ...], namespace: str
) -> None:
    """150 buckets included: exemplar slots of the two histograms never collide."""
    new, old = both(traffic(2000, 3, buckets), buckets, namespace, interval)
    assert_same(new, old)


@pytest.mark.parametrize("interval", [3600.0], indirect=True)
def test_same_exposition_for_no_traffic_and_failures_only(interval: float) -> None:
    assert_same(*both([]))
    failures = [(d, s) for d, s in traffic(300, 4, DEFAULT_BUCKETS) if d.reason is not None]
    assert_same(*both(failures))


@pytest.mark.parametrize("interval", [3600.0], indirect=True)
def test_same_restricted_scrapes(interval: float) -> None:
    """``name[]=`` (restricted_registry) finds the collector by every sample name."""
    new, old = both(traffic(500, 5, DEFAULT_BUCKETS))
    names = sorted({s.name for family in old.collect() for s in family.samples})
    assert len(names) >= 14
    for name in [*names, "django_http_delivery_duration_seconds", "nothing_here"]:
        assert_same(new.restricted_registry([name]), old.restricted_registry([name]))
    pair = ["django_http_responses_sending", "django_http_response_sent_bytes_total"]
    # The previous design's families came out in the order of a set of collectors.
    for encode in (generate_latest, openmetrics_latest):
        got, want = (families(encode(r.restricted_registry(pair))) for r in (new, old))
        assert got == want and len(got) == 2


@pytest.fixture
def no_created() -> Iterator[None]:
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        enable_created_metrics()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("interval", [3600.0], indirect=True)
@pytest.mark.usefixtures("no_created")
def test_same_exposition_without_created_series(interval: float) -> None:
    new, old = both(traffic(500, 6, DEFAULT_BUCKETS))
    assert b"_created" not in generate_latest(new)
    assert_same(new, old)


def test_names_clash_like_the_previous_design() -> None:
    """Registering either design next to the other is refused: the collector describes every
    name the library's metric objects claim."""
    registry = CollectorRegistry()
    DeliveryMetrics(registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        ReferenceMetrics(registry)
    registry = CollectorRegistry()
    reference = ReferenceMetrics(registry)
    for collector in (reference.delivered, reference.failures, reference.duration):
        registry.unregister(collector)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        DeliveryMetrics(registry=registry)


_MULTIPROCESS = """
import json, sys
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from django_sent_otel.delivery import Delivery, Tracker
from django_sent_otel.metrics import DeliveryMetrics, MetricsSink, flush
from tests.harness.metrics_reference import ReferenceMetrics

deliveries = [Delivery(*d) for d in json.load(sys.stdin)]
if sys.argv[1] == "new":
    sink = MetricsSink(DeliveryMetrics(registry=CollectorRegistry()))
    for delivery in deliveries:
        sink.metrics.record(delivery)
    Tracker("GET", [sink]).handler_returned("a/", 200)  # one response still in flight
    flush()  # what the writer thread does every half second
else:
    reference = ReferenceMetrics(None)
    for delivery in deliveries:
        reference.record(delivery)
    reference.sending.inc()
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
sys.stdout.write(generate_latest(registry).decode())
"""


def test_same_multiprocess_exposition(tmp_path: Path) -> None:
    deliveries = [list(d) for d, _ in traffic(1000, 7, DEFAULT_BUCKETS)]
    outputs = []
    for design in ("new", "old"):
        directory = tmp_path / design
        directory.mkdir()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", _MULTIPROCESS, design],
            input=json.dumps(deliveries),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    new, old = outputs
    assert "django_http_responses_sending 1.0" in old
    assert "client_disconnect" in old and 'le="+Inf"' in old
    # The collector merges the workers' files in directory order: compare the lines as sets.
    assert sorted(new.splitlines()) == sorted(old.splitlines())
