"""Prometheus metrics, recorded once per tracked response from its :class:`Delivery`.

The hot path keeps plain numbers: one small record per label set (counts, sums, bucket counts
found with ``bisect``, bytes), updated under one lock. :class:`DeliveryMetrics` is a
prometheus_client custom collector that turns those numbers into the six metric families at
scrape time, so exposition, OpenMetrics negotiation, ``name[]=`` filtering and
``PROMETHEUS_DISABLE_CREATED_SERIES`` stay the library's. The scrape is the same as it was with
one prometheus_client ``Counter``/``Histogram`` child per series: same names, help texts, types,
labels, buckets, values and exemplars, at a quarter of the cost per request.

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) the hot path is the same; a daemon thread
in each worker writes the worker's totals into prometheus_client's multiprocess values every
:data:`FLUSH_INTERVAL`, and again at exit (``atexit`` and the gunicorn ``worker_exit`` hook), so
scrapes that merge the workers' files lag by at most that interval, and a worker killed with
SIGKILL loses at most what it recorded since its last write.

Labels are bounded: a fixed method set, the route template (or ``unmatched``), the status code
and the failure reason.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from math import inf
from time import monotonic
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, multiprocess
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Exemplar

from ._compat import float_to_go_string, multiprocess_value
from ._names import DEFAULT_BUCKETS, DEFAULT_NAMESPACE
from .delivery import Delivery, Tracker, sending

logger = logging.getLogger(__name__)

_Key = tuple[str, str, int, str | None]
#: Label names and values of one sample.
_Labels = tuple[tuple[str, ...], tuple[str, ...]]
#: An exemplar as recorded: trace id, span id, observed value, wall-clock time.
_Trace = tuple[int, int, float, float]

#: At most one exemplar per series (histogram bucket, counter) per this many seconds, the
#: behaviour scrapes have always shown. Prometheus keeps only the latest exemplar of a series
#: and scrapes every few seconds, so this loses no exemplar a scrape would show.
EXEMPLAR_INTERVAL: Final = 1.0

#: How often, in multiprocess mode, a worker writes its numbers to its files (the most a
#: scrape lags behind, and what a worker killed with SIGKILL can lose).
FLUSH_INTERVAL: Final = 0.5

DELIVERED_HELP: Final = "Responses whose whole body was handed to the server (delivered)."
FAILURES_HELP: Final = "Responses not fully delivered, by reason (client_disconnect, stream_error)."
DURATION_HELP: Final = "Time from request start until the response was delivered."
SEND_HELP: Final = "Time from the handler returning the response until it was delivered."
BYTES_HELP: Final = "Response body bytes handed to the server, failed deliveries included."
SENDING_HELP: Final = "Responses between handler return and the end of their delivery."
FIRST_BYTE_HELP: Final = (
    "Time from request start until the first body byte (bodiless: the headers) was handed to "
    "the server, delivered or not."
)
UNDELIVERED_HELP: Final = (
    "Time from request start until the failure was known, for responses not fully delivered."
)
ABANDONED_HELP: Final = (
    "Seconds the application kept working on requests after their client was known gone."
)

_OUTCOME_LABELS: Final = ("method", "route", "status")
_ROUTE_LABELS: Final = ("method", "route")
_REASON_LABELS: Final = ("method", "route", "reason")


def multiprocess_dir() -> str | None:
    """The prometheus_client multiprocess directory, when multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def upper_bounds(buckets: Sequence[float]) -> tuple[float, ...]:
    """Histogram bucket bounds as prometheus_client's ``Histogram`` takes them: sorted (else
    ValueError), ``+Inf`` appended when missing, at least two."""
    bounds = [float(b) for b in buckets]
    if bounds != sorted(bounds):
        raise ValueError("Buckets not in sorted order")
    if bounds and bounds[-1] != inf:
        bounds.append(inf)
    if len(bounds) < 2:
        raise ValueError("Must have at least two buckets")
    return tuple(bounds)


class _Histogram:
    """One histogram series kept apart from the hot path's flat numbers (failures are rare):
    its sum, per-bucket counts and exemplars."""

    __slots__ = ("counts", "created", "labels", "sum", "traces")

    def __init__(self, labels: tuple[str, ...], size: int) -> None:
        self.labels = labels
        self.created = time.time()
        self.sum = 0.0
        self.counts = [0] * size
        self.traces: list[_Trace | None] = [None] * size

    def copy(self) -> tuple[float, list[int], list[_Trace | None]]:
        return self.sum, list(self.counts), list(self.traces)


class _Route:
    """The numbers of one (method, route): its histograms and the byte counter."""

    __slots__ = (
        "abandoned_seconds",
        "created",
        "duration_counts",
        "duration_sum",
        "duration_traces",
        "first_byte_counts",
        "first_byte_sum",
        "first_byte_traces",
        "labels",
        "send_counts",
        "send_sum",
        "send_traces",
        "sent_bytes",
    )

    def __init__(self, labels: tuple[str, str], size: int) -> None:
        self.labels = labels
        self.created = time.time()
        self.sent_bytes = 0
        self.abandoned_seconds = 0.0
        self.duration_sum = 0.0
        self.send_sum = 0.0
        # Per bucket, not cumulative (as prometheus_client keeps them); summed at scrape.
        self.duration_counts = [0] * size
        self.send_counts = [0] * size
        # The latest exemplar of each bucket, from whichever status it came.
        self.duration_traces: list[_Trace | None] = [None] * size
        self.send_traces: list[_Trace | None] = [None] * size
        self.first_byte_sum = 0.0
        self.first_byte_counts = [0] * size
        self.first_byte_traces: list[_Trace | None] = [None] * size


class _Series:
    """The numbers of one (method, route, status, reason): one outcome counter series."""

    __slots__ = ("count", "created", "exemplified", "gone", "labels", "reason", "route", "trace")

    def __init__(
        self,
        labels: tuple[str, str, str],
        reason: str | None,
        route: _Route,
        gone: _Histogram | None = None,
    ) -> None:
        self.labels = labels
        self.reason = reason
        self.route = route
        #: A failure's series: the undelivered histogram of its method, route and reason.
        self.gone = gone
        self.created = time.time()
        self.count = 0
        self.trace: _Trace | None = None
        # When this label set last gave an exemplar to: [0] its counter, [1 + i] duration
        # bucket i, [1 + size + j] send bucket j, [1 + 2 * size + k] first-byte bucket k,
        # [1 + 3 * size + i] undelivered bucket i (the throttle is per label set and series).
        self.exemplified: list[float] = []


class DeliveryMetrics:
    """The eight delivery metrics of one namespace: a collector registered on one registry."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = REGISTRY,
        namespace: str = DEFAULT_NAMESPACE,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        self.registry = registry
        self.namespace = namespace
        self.buckets = tuple(buckets)
        self.bounds = upper_bounds(buckets)
        self._le = tuple(float_to_go_string(b) for b in self.bounds)
        prefix = f"{namespace}_" if namespace else ""
        self.names = (
            f"{prefix}http_responses_delivered",
            f"{prefix}http_response_delivery_failures",
            f"{prefix}http_delivery_duration_seconds",
            f"{prefix}http_send_duration_seconds",
            f"{prefix}http_response_sent_bytes",
            f"{prefix}http_responses_sending",
            f"{prefix}http_time_to_first_byte_seconds",
            f"{prefix}http_undelivered_duration_seconds",
        )
        self.abandoned_name = f"{prefix}http_abandoned_work_seconds"
        self._series: dict[_Key, _Series] = {}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._undelivered: dict[tuple[str, str, str], _Histogram] = {}
        self._lock = threading.Lock()
        self._writer: _MultiprocessWriter | None = None
        if multiprocess_dir():
            self._writer = _MultiprocessWriter(self)
        if registry is not None:
            registry.register(self)
        _instances.add(self)

    def _forked(self) -> None:
        """In a forked child: a lock another thread of the parent may have held is new."""
        self._lock = threading.Lock()
        if self._writer is not None:
            # The child writes its own file: the parent's numbers are the parent's to write.
            self._series = {}
            self._routes = {}
            self._undelivered = {}
            self._writer.forked()

    def start_writer(self) -> None:
        """Multiprocess mode: make sure this process writes its numbers (a response is being
        sent, or was recorded)."""
        if self._writer is not None:
            self._writer.start()

    @property
    def collectors(self) -> tuple[Any, ...]:
        return (self,)

    def unregister(self) -> None:
        if self.registry is not None:
            self.registry.unregister(self)

    @staticmethod
    def sending() -> int:
        """Responses between handler return and the end of their delivery, now (counted by
        the delivery core for every tracked response of the process)."""
        return sending()

    # The hot path

    def record(self, delivery: Delivery | Tracker, span: Any = None) -> None:
        """Count one finished delivery: the delivery and send histograms observe delivered
        responses, the undelivered one the others, time to first byte both (when known).

        ``delivery``: a :class:`Delivery`, or the finished tracker itself (the sink passes
        it, so that no ``Delivery`` is built for metrics). ``span``: the delivery's span; its
        trace becomes an exemplar on the delivered counter and the two histogram buckets
        observed, when sampled and when those series have had none for
        :data:`EXEMPLAR_INTERVAL`.
        """
        reason = delivery.reason
        try:  # a subscript is cheaper than .get(), and ``try`` is free
            series = self._series[delivery.method, delivery.route, delivery.status_code, reason]
        except KeyError:
            series = self._add(delivery.method, delivery.route, delivery.status_code, reason)
        numbers = series.route
        # One lock for all of it: ``+=`` on a shared number is not atomic across threads.
        # acquire()/release() rather than ``with``: half the cost (``try`` is free).
        lock = self._lock
        bounds = self.bounds
        duration = delivery.duration
        i = bisect_left(bounds, duration)
        first = delivery.time_to_first_byte
        k = -1
        if first is not None:
            # The first byte comes within the duration: its bucket is at most i, most often i.
            if first <= duration and (i == 0 or first > bounds[i - 1]):
                k = i
            else:
                k = bisect_left(bounds, first)
        if reason is None:
            send = delivery.send_duration
            # The send phase is part of the duration, so its bucket is at most i, and most
            # often i itself (always for requests faster than the first bound): one
            # comparison instead of a second search.
            if send <= duration and (i == 0 or send > bounds[i - 1]):
                j = i
            else:
                j = bisect_left(bounds, send)
            sent = delivery.bytes_sent
            lock.acquire()
            try:
                series.count += 1
                numbers.sent_bytes += sent
                numbers.duration_sum += duration
                numbers.duration_counts[i] += 1
                numbers.send_sum += send
                numbers.send_counts[j] += 1
                if k >= 0:
                    numbers.first_byte_sum += first  # type: ignore[operator]
                    numbers.first_byte_counts[k] += 1
            finally:
                lock.release()
            if span is not None:
                # The throttle first (a clock read, a few comparisons): most responses find
                # no series due and never touch the span.
                interval = EXEMPLAR_INTERVAL
                now = monotonic()
                last = series.exemplified
                size = len(bounds)
                if (
                    now - last[0] >= interval
                    or now - last[1 + i] >= interval
                    or now - last[size + 1 + j] >= interval
                    or (k >= 0 and now - last[2 * size + 1 + k] >= interval)
                ):
                    self._exemplars(series, i, j, delivery, span, k=k, now=now)
        else:
            self._record_failure(series, delivery, span, i=i, k=k)

    def _record_failure(
        self, series: _Series, delivery: Delivery | Tracker, span: Any, *, i: int, k: int
    ) -> None:
        """A response not fully delivered: its counter, bytes, how long the client stayed
        (until the failure was known) and the time to its first byte, if it got that far."""
        numbers = series.route
        gone: _Histogram = series.gone  # type: ignore[assignment]
        duration = delivery.duration
        first = delivery.time_to_first_byte
        lock = self._lock
        lock.acquire()
        try:
            series.count += 1
            numbers.sent_bytes += delivery.bytes_sent
            gone.sum += duration
            gone.counts[i] += 1
            if k >= 0:
                numbers.first_byte_sum += first  # type: ignore[operator]
                numbers.first_byte_counts[k] += 1
        finally:
            lock.release()
        if span is None:
            return
        ctx = span.get_span_context()
        if not ctx.trace_flags.sampled:
            return
        now = monotonic()
        wall = time.time()
        last = series.exemplified
        size = len(self.bounds)
        if now - last[3 * size + 1 + i] >= EXEMPLAR_INTERVAL:
            last[3 * size + 1 + i] = now
            gone.traces[i] = (ctx.trace_id, ctx.span_id, duration, wall)
        at = 2 * size + 1 + k
        if k >= 0 and now - last[at] >= EXEMPLAR_INTERVAL:
            last[at] = now
            numbers.first_byte_traces[k] = (ctx.trace_id, ctx.span_id, first, wall)  # type: ignore[assignment]

    def record_abandoned(self, method: str, route: str, seconds: float) -> None:
        """Add the seconds the application worked on a request after its client left."""
        key = (method, route)
        with self._lock:
            numbers = self._routes.get(key)
            if numbers is None:
                numbers = self._routes[key] = _Route(key, len(self.bounds))
            numbers.abandoned_seconds += seconds
        self.start_writer()

    def _add(self, method: str, route: str, status_code: int, reason: str | None) -> _Series:
        """The record of a new label set (and of its method and route if new)."""
        with self._lock:
            key = (method, route, status_code, reason)
            series = self._series.get(key)
            if series is None:
                size = len(self.bounds)
                numbers = self._routes.get((method, route))
                if numbers is None:
                    numbers = self._routes[(method, route)] = _Route((method, route), size)
                gone = None
                if reason is not None:
                    gone = self._undelivered.get((method, route, reason))
                    if gone is None:
                        gone = _Histogram((method, route, reason), size)
                        self._undelivered[(method, route, reason)] = gone
                series = _Series((method, route, str(status_code)), reason, numbers, gone)
                series.exemplified = [-inf] * (1 + 4 * size)
                self._series[key] = series
        self.start_writer()
        return series

    def _exemplars(
        self,
        series: _Series,
        i: int,
        j: int,
        delivery: Delivery | Tracker,
        span: Any,
        *,
        k: int,
        now: float,
    ) -> None:
        """Keep the span's trace on each of the series it updated that is due (one exemplar
        per series per :data:`EXEMPLAR_INTERVAL`), if the span is sampled; ``k`` is the
        first-byte bucket, -1 when there was none."""
        ctx = span.get_span_context()
        if not ctx.trace_flags.sampled:
            return
        last = series.exemplified
        interval = EXEMPLAR_INTERVAL
        send_at = len(self.bounds) + 1 + j
        numbers = series.route
        wall = time.time()
        if now - last[0] >= interval:
            last[0] = now
            series.trace = (ctx.trace_id, ctx.span_id, 1.0, wall)
        if now - last[1 + i] >= interval:
            last[1 + i] = now
            numbers.duration_traces[i] = (ctx.trace_id, ctx.span_id, delivery.duration, wall)
        if now - last[send_at] >= interval:
            last[send_at] = now
            numbers.send_traces[j] = (ctx.trace_id, ctx.span_id, delivery.send_duration, wall)
        first_at = 2 * len(self.bounds) + 1 + k
        if k >= 0 and now - last[first_at] >= interval:
            last[first_at] = now
            first = delivery.time_to_first_byte
            numbers.first_byte_traces[k] = (ctx.trace_id, ctx.span_id, first, wall)  # type: ignore[assignment]

    # The scrape

    def describe(self) -> Iterator[Metric]:
        """The families without samples: the registry learns the names (clash detection,
        ``restricted_registry``) without a collect."""
        delivered, failures, duration, send, sent_bytes, sending, first, gone = self.names
        yield CounterMetricFamily(delivered, DELIVERED_HELP, labels=_OUTCOME_LABELS)
        yield CounterMetricFamily(failures, FAILURES_HELP, labels=(*_OUTCOME_LABELS, "reason"))
        yield HistogramMetricFamily(duration, DURATION_HELP, labels=_ROUTE_LABELS)
        yield HistogramMetricFamily(send, SEND_HELP, labels=_ROUTE_LABELS)
        yield CounterMetricFamily(sent_bytes, BYTES_HELP, labels=_ROUTE_LABELS)
        yield GaugeMetricFamily(sending, SENDING_HELP)
        yield HistogramMetricFamily(first, FIRST_BYTE_HELP, labels=_ROUTE_LABELS)
        yield HistogramMetricFamily(gone, UNDELIVERED_HELP, labels=_REASON_LABELS)
        yield CounterMetricFamily(self.abandoned_name, ABANDONED_HELP, labels=_ROUTE_LABELS)

    def empty(self) -> Iterator[Metric]:
        """Every family as a scrape shows it before any response: no series, the gauge 0."""
        for family in self.describe():
            if isinstance(family, GaugeMetricFamily):
                family.add_metric((), 0)
            yield family

    def collect(self) -> Iterator[Metric]:
        created = _created_enabled()
        with self._lock:  # a consistent copy; the families are built outside the lock
            series = [
                (s.labels, s.reason, s.count, s.created, s.trace) for s in self._series.values()
            ]
            routes = [_RouteCopy(r) for r in self._routes.values()]
            gone = [_HistogramCopy(h) for h in self._undelivered.values()]
        names = self.names
        delivered = CounterMetricFamily(names[0], DELIVERED_HELP, labels=_OUTCOME_LABELS)
        failures = CounterMetricFamily(names[1], FAILURES_HELP, labels=(*_OUTCOME_LABELS, "reason"))
        for labels, reason, count, since, trace in series:
            when = since if created else None
            if reason is None:
                delivered.add_metric(labels, count, when, exemplar=_exemplar(trace))
            else:
                failures.add_metric((*labels, reason), count, when)
        yield delivered
        yield failures
        for name, help_text, field in (
            (names[2], DURATION_HELP, "duration"),
            (names[3], SEND_HELP, "send"),
        ):
            yield self._histogram(
                name, help_text, _ROUTE_LABELS, routes, field=field, created=created
            )
        sent_bytes = CounterMetricFamily(names[4], BYTES_HELP, labels=_ROUTE_LABELS)
        for route in routes:
            sent_bytes.add_metric(
                route.labels, route.sent_bytes, route.created if created else None
            )
        yield sent_bytes
        yield GaugeMetricFamily(names[5], SENDING_HELP, value=self.sending())
        yield self._histogram(
            names[6], FIRST_BYTE_HELP, _ROUTE_LABELS, routes, field="first_byte", created=created
        )
        yield self._histogram(
            names[7], UNDELIVERED_HELP, _REASON_LABELS, gone, field="numbers", created=created
        )
        abandoned = CounterMetricFamily(self.abandoned_name, ABANDONED_HELP, labels=_ROUTE_LABELS)
        for route in routes:
            abandoned.add_metric(
                route.labels, route.abandoned_seconds, route.created if created else None
            )
        yield abandoned

    def _histogram(
        self,
        name: str,
        help_text: str,
        label_names: tuple[str, ...],
        rows: Sequence[_RouteCopy] | Sequence[_HistogramCopy],
        *,
        field: str,
        created: bool,
    ) -> HistogramMetricFamily:
        histogram = HistogramMetricFamily(name, help_text, labels=label_names)
        for row in rows:
            total, counts, traces = getattr(row, field)
            histogram.add_metric(row.labels, self._cumulative(counts, traces), total)
            if created:
                labels_dict = dict(zip(label_names, row.labels, strict=True))
                histogram.add_sample(f"{name}_created", labels_dict, row.created)
        return histogram

    def _cumulative(self, counts: list[int], traces: list[_Trace | None]) -> list[_Bucket]:
        """prometheus_client's bucket samples: cumulative counts, ``le`` as it formats it."""
        total = 0
        out: list[_Bucket] = []
        for le, count, trace in zip(self._le, counts, traces, strict=True):
            total += count
            exemplar = _exemplar(trace)
            out.append((le, total) if exemplar is None else (le, total, exemplar))
        return out


_Bucket = tuple[str, float] | tuple[str, float, Exemplar]


_Numbers = tuple[float, list[int], list[_Trace | None]]


class _HistogramCopy:
    """A scrape's copy of one :class:`_Histogram`, taken under the lock."""

    __slots__ = ("created", "labels", "numbers")

    def __init__(self, histogram: _Histogram) -> None:
        self.labels = histogram.labels
        self.created = histogram.created
        self.numbers: _Numbers = histogram.copy()


class _RouteCopy:
    """A scrape's copy of one :class:`_Route`, taken under the lock."""

    __slots__ = (
        "abandoned_seconds",
        "created",
        "duration",
        "first_byte",
        "labels",
        "send",
        "sent_bytes",
    )

    def __init__(self, route: _Route) -> None:
        self.labels = route.labels
        self.abandoned_seconds = route.abandoned_seconds
        self.created = route.created
        self.sent_bytes = route.sent_bytes
        self.duration = (
            route.duration_sum,
            list(route.duration_counts),
            list(route.duration_traces),
        )
        self.send = (route.send_sum, list(route.send_counts), list(route.send_traces))
        self.first_byte = (
            route.first_byte_sum,
            list(route.first_byte_counts),
            list(route.first_byte_traces),
        )


def _exemplar(trace: _Trace | None) -> Exemplar | None:
    if trace is None:
        return None
    trace_id, span_id, value, wall = trace
    labels = {"trace_id": format(trace_id, "032x"), "span_id": format(span_id, "016x")}
    return Exemplar(labels, value, wall)


_created_probe: Counter | None = None


def _created_enabled() -> bool:
    """Whether prometheus_client emits ``_created`` series now (its
    ``PROMETHEUS_DISABLE_CREATED_SERIES`` switch and ``disable_created_metrics()``), asked of
    an unregistered counter of its own, so the decision stays the library's."""
    global _created_probe
    if _created_probe is None:
        _created_probe = Counter("created_probe", "", registry=None)
    return any(s.name.endswith("_created") for m in _created_probe.collect() for s in m.samples)


class _MultiprocessWriter:
    """Multiprocess mode: publishes this worker's numbers into prometheus_client's
    multiprocess values (the worker's memory-mapped files that ``MultiProcessCollector``
    merges), every :data:`FLUSH_INTERVAL` from a daemon thread, at exit, and from the
    gunicorn ``worker_exit`` hook.

    Each worker writes only its own file, so the values are written as totals, not deltas:
    a repeated or concurrent flush can never count twice. The value objects are created with
    the same keys prometheus_client's own ``Counter``/``Histogram``/``Gauge`` children use
    (``tests/test_metrics_equivalence.py`` compares the merged expositions).
    """

    def __init__(self, owner: DeliveryMetrics) -> None:
        self.owner = owner
        self._lock = threading.Lock()  # one flush at a time
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._values: dict[tuple[Any, ...], Any] = {}
        self._written: dict[tuple[Any, ...], float] = {}
        _writers.add(self)

    def start(self) -> None:
        """Start the flushing thread in this process, once."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="django-sent-otel-metrics", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            self.flush()

    def forked(self) -> None:
        """In a forked child: no thread yet, and values of the child's own file."""
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread = None
        self._values = {}
        self._written = {}

    def _write(
        self, typ: str, name: str, suffix: str, labels: _Labels, number: float, *, help_text: str
    ) -> None:
        """Set one value if it changed, creating it (with prometheus_client's key) first."""
        key = (name + suffix, labels[1])
        if self._written.get(key) == number:
            return
        value = self._values.get(key)
        if value is None:
            labelnames, labelvalues = labels
            mode = "livesum" if typ == "gauge" else ""
            value = multiprocess_value()(
                typ, name, name + suffix, labelnames, labelvalues, help_text, multiprocess_mode=mode
            )
            self._values[key] = value
        value.set(number)
        self._written[key] = number

    def flush(self, timeout: float = -1) -> None:
        """Write every number that changed since the last flush; never raises."""
        if not self._lock.acquire(timeout=timeout):
            logger.warning("django-sent-otel: multiprocess metrics not written (busy)")
            return
        try:
            self._flush()
        except Exception:
            logger.exception("django-sent-otel: writing multiprocess metrics failed")
        finally:
            self._lock.release()

    def _flush(self) -> None:
        owner = self.owner
        delivered, failures, duration, send, sent_bytes, sending, first, gone = owner.names
        write = self._write
        with owner._lock:
            series = [(s.labels, s.reason, s.count) for s in owner._series.values()]
            routes = [_RouteCopy(r) for r in owner._routes.values()]
            undelivered = [_HistogramCopy(h) for h in owner._undelivered.values()]
        # Histograms and bytes first: a scrape that shows a response's outcome shows the rest.
        bucket_names = (*_ROUTE_LABELS, "le")
        for route in routes:
            labels: _Labels = (_ROUTE_LABELS, route.labels)
            for name, help_text, (total, counts, _) in (
                (duration, DURATION_HELP, route.duration),
                (send, SEND_HELP, route.send),
                (first, FIRST_BYTE_HELP, route.first_byte),
            ):
                write("histogram", name, "_sum", labels, total, help_text=help_text)
                for le, count in zip(owner._le, counts, strict=True):
                    bucket: _Labels = (bucket_names, (*route.labels, le))
                    write("histogram", name, "_bucket", bucket, count, help_text=help_text)
            write("counter", sent_bytes, "_total", labels, route.sent_bytes, help_text=BYTES_HELP)
            abandoned = (owner.abandoned_name, route.abandoned_seconds)
            write("counter", abandoned[0], "_total", labels, abandoned[1], help_text=ABANDONED_HELP)
        for copy in undelivered:
            total, counts, _ = copy.numbers
            reason_labels: _Labels = (_REASON_LABELS, copy.labels)
            write("histogram", gone, "_sum", reason_labels, total, help_text=UNDELIVERED_HELP)
            for le, count in zip(owner._le, counts, strict=True):
                gone_bucket: _Labels = ((*_REASON_LABELS, "le"), (*copy.labels, le))
                write("histogram", gone, "_bucket", gone_bucket, count, help_text=UNDELIVERED_HELP)
        for values, reason, count in series:
            if reason is None:
                labels = (_OUTCOME_LABELS, values)
                write("counter", delivered, "_total", labels, count, help_text=DELIVERED_HELP)
            else:
                labels = ((*_OUTCOME_LABELS, "reason"), (*values, reason))
                write("counter", failures, "_total", labels, count, help_text=FAILURES_HELP)
        write("gauge", sending, "", ((), ()), owner.sending(), help_text=SENDING_HELP)


class _Merged:
    """Multiprocess mode: the workers' files merged by prometheus_client's
    ``MultiProcessCollector``, then every family no worker has written yet, empty (the files
    hold series, not families: before the first response they hold nothing)."""

    def __init__(self, metrics: DeliveryMetrics | None) -> None:
        self.merged = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        seen = set()
        for family in self.merged.collect():  # type: ignore[no-untyped-call]
            seen.add(family.name)
            yield family
        if self.metrics is not None:
            for family in self.metrics.empty():
                if family.name not in seen:
                    yield family


def multiprocess_registry(metrics: DeliveryMetrics | None) -> CollectorRegistry:
    """A registry of every worker's numbers merged, for one scrape in multiprocess mode;
    ``metrics``: this process's, whose families are shown even before anything was written."""
    registry = CollectorRegistry()
    registry.register(_Merged(metrics))
    return registry


_writers: weakref.WeakSet[_MultiprocessWriter] = weakref.WeakSet()


def flush(timeout: float = 5.0) -> None:
    """Write this process's numbers to its multiprocess files now (worker exit, interpreter
    exit); nothing to do outside multiprocess mode. Never blocks an exit for longer than
    ``timeout`` per writer."""
    for writer in list(_writers):
        writer.flush(timeout)


_instances: weakref.WeakSet[DeliveryMetrics] = weakref.WeakSet()


def _after_fork() -> None:
    for metrics in list(_instances):
        metrics._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
atexit.register(flush)


_cache: dict[tuple[int, str], DeliveryMetrics] = {}
_cache_lock = threading.Lock()


def get_metrics(
    registry: CollectorRegistry, namespace: str, buckets: Sequence[float]
) -> DeliveryMetrics:
    """The metrics for a registry and namespace, created once (reused when settings reload).

    Building the same names twice on one registry would raise "Duplicated timeseries"; a
    bucket change replaces the collector instead.
    """
    key = (id(registry), namespace)
    with _cache_lock:
        old = _cache.get(key)
        if old is not None and old.registry is not registry:
            old = None  # a registry that was garbage-collected and its id reused
        if old is not None and old.buckets == tuple(buckets):
            return old
        # Build unregistered first: invalid buckets raise here, leaving the old set intact.
        metrics = DeliveryMetrics(registry=None, namespace=namespace, buckets=buckets)
        if old is not None:
            old.unregister()
        try:
            _register(registry, metrics.collectors)
        except Exception:
            if old is not None:
                _register(registry, old.collectors)
            raise
        metrics.registry = registry
        _cache[key] = metrics
        return metrics


def _register(registry: CollectorRegistry, collectors: Sequence[Any]) -> None:
    """Register all or none (a name clash with another collector raises ValueError)."""
    done: list[Any] = []
    try:
        for collector in collectors:
            registry.register(collector)
            done.append(collector)
    except Exception:
        for collector in done:
            registry.unregister(collector)
        raise


class MetricsSink:
    """Records each delivery (the in-flight gauge is the delivery core's count).

    ``finished`` is the metrics' own ``record`` when no span can give an exemplar (exemplars
    off, multiprocess mode, or no tracing sink before this one): one call per response.
    """

    __slots__ = ("exemplars", "finished", "metrics", "on_return")

    def __init__(
        self, metrics: DeliveryMetrics, *, exemplars: bool = True, tracing: bool = True
    ) -> None:
        self.metrics = metrics
        multiprocess = multiprocess_dir() is not None
        # prometheus_client cannot store exemplars in multiprocess mode.
        self.exemplars = exemplars and not multiprocess and tracing
        # The tracker has every field record() reads: no Delivery is built for metrics.
        self.finished: Callable[[Tracker], None] = (
            self._finished_with_exemplar if self.exemplars else metrics.record
        )
        #: Only in multiprocess mode is there work when a handler returns: a process whose
        #: first response is still being sent writes its in-flight gauge all the same.
        self.on_return = multiprocess

    def handler_returned(self, tracker: Tracker) -> None:
        self.metrics.start_writer()

    def _finished_with_exemplar(self, tracker: Tracker) -> None:
        self.metrics.record(tracker, tracker.span)

    def abandoned(self, tracker: Tracker, seconds: float) -> None:
        """The application stopped working ``seconds`` after the client was known gone."""
        self.metrics.record_abandoned(tracker.method, tracker.route, seconds)
