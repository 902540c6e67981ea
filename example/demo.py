"""``python -m example.demo``: the example under gunicorn, real traffic, a readable summary.

1. Starts the example project under gunicorn (2 workers on 127.0.0.1) with a temporary
   ``PROMETHEUS_MULTIPROC_DIR``, so ``/metrics`` shows the totals of every worker.
2. Sends a short, bounded traffic mix: full reads of every view, plus CSV exports and file
   downloads abandoned after a few kilobytes (the socket is closed with a TCP reset, like a
   browser tab closed mid-download).
3. Scrapes ``/metrics`` and prints deliveries and failures by route and reason, the p95 time
   until delivered (from the histogram buckets), bytes sent, the slowest delivery recorded by a
   ``response_delivered`` receiver, and one trace's spans.
4. Keeps serving until Ctrl-C, or ``--duration`` seconds (``--duration 0``: exit right away).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from tests.harness.clients import abort_after, full_read
from tests.harness.names import (
    CLIENT_DISCONNECT,
    DELIVERED_TOTAL,
    DELIVERY_DURATION,
    FAILURES_TOTAL,
    SEND_DURATION,
    SENDING,
    SENT_BYTES_TOTAL,
)
from tests.harness.scrape import Scrape, scrape, total, wait_scrape
from tests.harness.servers import Server

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = Path(__file__).resolve().parent / "gunicorn.conf.py"
HOST = "127.0.0.1"

#: Bytes read before an aborted request resets its connection.
ABORT_AFTER = {"/export.csv": 48 * 1024, "/download/": 256 * 1024}
#: A small receive window for aborting clients: the server cannot park the whole body in
#: kernel buffers, so it is still sending when the reset arrives.
ABORT_RCVBUF = 16 * 1024


# --- the server ---------------------------------------------------------------------------


def port_available(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


class ExampleServer(Server):
    """The example under gunicorn (the project's server harness), logging to ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int,
        workers: int = 2,
        env: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.workdir = workdir
        self.delivery_log = workdir / "deliveries.jsonl"
        self.spans_file = workdir / "spans.jsonl"
        super().__init__(
            "gunicorn-sync",
            app="example.wsgi:application",
            extra_args=["--config", str(GUNICORN_CONF)],
            settings="example.settings",
            multiprocess_dir=workdir / "multiproc",
            port=port,
            workers=workers,
            env={
                "EXAMPLE_DELIVERY_LOG": str(self.delivery_log),
                "EXAMPLE_SPANS_FILE": str(self.spans_file),
                **(env or {}),
            },
            log_dir=workdir,
            log_name="gunicorn",
            ready_status=200,  # /metrics answers 200: every worker can import the project
            start_timeout=start_timeout,
            die_with_parent=True,
        )


# --- traffic ------------------------------------------------------------------------------


def request(port: int, kind: str, path: str) -> tuple[int, int]:
    """One step of the mix: a ``full`` read, or an ``abort`` after a few kilobytes of body
    (closed with a TCP reset, like a browser tab closed mid-download): (status, body bytes).
    An aborted request reports status 0: it has no outcome the client could see."""
    if kind == "full":
        response = full_read(port, path, timeout=30.0)
        return response.status, response.body_len
    abort = abort_after(port, path, ABORT_AFTER.get(path, 16384), timeout=10.0, rcvbuf=ABORT_RCVBUF)
    return 0, abort.body_received


@dataclass
class Traffic:
    """What the demo's clients did."""

    full: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    aborted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    errors: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def requests(self) -> int:
        """Requests that reached the server (each one is tracked: none is /metrics)."""
        return sum(self.full.values()) + sum(self.aborted.values())


def plan(rounds: int) -> list[tuple[str, str]]:
    """The mix, round by round: ("full" | "abort", path)."""
    steps: list[tuple[str, str]] = []
    for n in range(rounds):
        steps += [
            ("full", "/"),
            ("full", "/api/articles/2024/"),
            ("full", f"/api/articles/{2000 + n % 26}/"),
            ("full", "/export.csv"),
            ("abort", "/export.csv"),
            ("full", "/download/"),
            ("abort", "/download/"),
            ("abort", "/export.csv"),
        ]
        if n % 2 == 0:
            steps.append(("full", "/no-such-page/"))
    return steps


def run_traffic(
    port: int,
    steps: Sequence[tuple[str, str]],
    *,
    timeout: float = 60.0,
    concurrency: int = 3,
    stop: threading.Event | None = None,
) -> Traffic:
    """Run the steps with a few concurrent clients, bounded by ``timeout`` seconds."""
    traffic = Traffic()
    deadline = time.monotonic() + timeout
    started = time.monotonic()

    def one(kind: str, path: str) -> None:
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            return
        try:
            status, size = request(port, kind, path)
        except (OSError, AssertionError) as exc:
            with traffic.lock:
                traffic.errors.append(f"{kind} {path}: {type(exc).__name__}: {exc}")
            return
        with traffic.lock:
            (traffic.full if kind == "full" else traffic.aborted)[path] += 1
            if status:
                traffic.statuses[status] += 1
            traffic.bytes_read += size

    with ThreadPoolExecutor(concurrency, thread_name_prefix="demo-client") as pool:
        futures = [pool.submit(one, kind, path) for kind, path in steps]
        for future in as_completed(futures):
            future.result()
    traffic.seconds = time.monotonic() - started
    return traffic


# --- reading /metrics ---------------------------------------------------------------------


@dataclass
class Snapshot:
    """The delivery metrics of one scrape, summed over methods and statuses."""

    delivered: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    failures: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    buckets: dict[str, dict[float, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    send_buckets: dict[str, dict[float, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    sent_bytes: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    statuses: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    sending: float = 0.0

    @property
    def total_delivered(self) -> float:
        return sum(self.delivered.values())

    def total_failures(self, reason: str | None = None) -> float:
        return sum(v for (_, r), v in self.failures.items() if reason is None or r == reason)

    @property
    def routes(self) -> list[str]:
        names = set(self.delivered) | {route for route, _ in self.failures} | set(self.sent_bytes)
        return sorted(names)


def parse_metrics(text: str) -> Snapshot:
    return snapshot(Scrape.parse(text))


def snapshot(scraped: Scrape) -> Snapshot:
    snap = Snapshot()
    for sample in scraped.samples:
        name, labels, value = sample.name, sample.labels, sample.value
        route = labels.get("route", "")
        if name == DELIVERED_TOTAL:
            snap.delivered[route] += value
            snap.statuses[(route, labels.get("status", ""))] += value
        elif name == FAILURES_TOTAL:
            snap.failures[(route, labels.get("reason", ""))] += value
        elif name == f"{DELIVERY_DURATION}_bucket":
            snap.buckets[route][float(labels["le"])] += value
        elif name == f"{SEND_DURATION}_bucket":
            snap.send_buckets[route][float(labels["le"])] += value
        elif name == SENT_BYTES_TOTAL:
            snap.sent_bytes[route] += value
        elif name == SENDING:
            snap.sending += value
    return snap


def merge(buckets: Iterable[dict[float, float]]) -> dict[float, float]:
    total: dict[float, float] = defaultdict(float)
    for one in buckets:
        for le, count in one.items():
            total[le] += count
    return total


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile`` on cumulative buckets (upper bound -> count), like Prometheus.

    Linear interpolation inside the bucket holding the rank; a rank in the +Inf bucket gives
    the highest finite bound. None without observations.
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def wait_for_outcomes(port: int, expected: int, timeout: float = 15.0) -> Snapshot:
    """Scrape until every sent request has an outcome (aborts end when the server notices);
    at the deadline, summarise what there is."""
    try:
        scraped = wait_scrape(
            port,
            lambda s: total(s.outcomes()) >= expected,
            what=f"{expected} outcomes",
            timeout=timeout,
        )
    except AssertionError:
        scraped = scrape(port)
    return snapshot(scraped)


# --- traces and the signal's records ----------------------------------------------------


def _timestamp(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return records
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def pick_trace(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spans of one interesting trace: an aborted CSV export if any, else the slowest."""
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        by_trace[span["context"]["trace_id"]].append(span)
    delivered_spans = [s for s in spans if s.get("name") == "response-delivered"]

    def score(span: dict[str, Any]) -> tuple[bool, bool, float]:
        attributes = span.get("attributes", {})
        return (
            attributes.get("delivery.outcome") == CLIENT_DISCONNECT,
            attributes.get("http.route") == "export.csv",
            _timestamp(span["end_time"]) - _timestamp(span["start_time"]),
        )

    if not delivered_spans:
        return []
    best = max(delivered_spans, key=score)
    return sorted(by_trace[best["context"]["trace_id"]], key=lambda s: _timestamp(s["start_time"]))


def format_trace(spans: list[dict[str, Any]]) -> list[str]:
    if not spans:
        return []
    origin = _timestamp(spans[0]["start_time"])
    ids = {s["context"]["span_id"] for s in spans}
    lines = [f"  trace_id {spans[0]['context']['trace_id'].removeprefix('0x')}"]
    for span in spans:
        depth = 1 if span.get("parent_id") in ids else 0
        start = (_timestamp(span["start_time"]) - origin) * 1000
        length = (_timestamp(span["end_time"]) - _timestamp(span["start_time"])) * 1000
        kind = str(span.get("kind", "")).rsplit(".", 1)[-1]
        status = span.get("status", {}).get("status_code", "UNSET")
        name = ("└─ " if depth else "") + span.get("name", "?")
        lines.append(
            f"    {name:<24} {kind:<8} starts +{start:6.1f} ms  lasts {length:7.1f} ms  "
            f"status {status}"
        )
        attributes = span.get("attributes", {})
        if span.get("name") == "response-delivered":
            keys = ("delivery.outcome", "http.response.body.size", "error.type")
            shown = " ".join(f"{k}={attributes[k]}" for k in keys if k in attributes)
            lines.append(f"{'':>7}{shown}")
    return lines


# --- the summary ------------------------------------------------------------------------


def human_bytes(value: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover


def human_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def summary(
    server: ExampleServer,
    traffic: Traffic,
    snap: Snapshot,
    *,
    otlp_endpoint: str | None,
) -> str:
    out: list[str] = []
    add = out.append
    add("")
    add(f"django-sent-otel demo: the example under gunicorn ({server.workers} workers)")
    add("=" * 78)
    aborted = sum(traffic.aborted.values())
    add(
        f"Traffic: {traffic.requests} requests in {traffic.seconds:.1f} s "
        f"({traffic.requests - aborted} read fully, {aborted} abandoned with a TCP reset), "
        f"{human_bytes(traffic.bytes_read)} read by the clients"
    )
    for error in traffic.errors[:5]:
        add(f"  client error: {error}")
    add("")
    add(f"Outcomes by route, from {server.url}/metrics (all workers):")
    header = (
        f"  {'route':<26} {'delivered':>9} {'client_disconnect':>17} {'stream_error':>12} "
        f"{'p95 delivered':>13} {'bytes sent':>10}"
    )
    add(header)
    add("  " + "-" * (len(header) - 2))
    for route in snap.routes:
        add(
            f"  {route:<26} {snap.delivered.get(route, 0):>9.0f} "
            f"{snap.failures.get((route, 'client_disconnect'), 0):>17.0f} "
            f"{snap.failures.get((route, 'stream_error'), 0):>12.0f} "
            f"{human_seconds(quantile(0.95, snap.buckets.get(route, {}))):>13} "
            f"{human_bytes(snap.sent_bytes.get(route, 0)):>10}"
        )
    overall = quantile(0.95, merge(snap.buckets.values()))
    send = quantile(0.95, merge(snap.send_buckets.values()))
    failed = snap.total_failures()
    finished = snap.total_delivered + failed
    ratio = failed / finished if finished else 0.0
    add("")
    add(
        f"Totals: delivered={snap.total_delivered:.0f} "
        f"client_disconnect={snap.total_failures('client_disconnect'):.0f} "
        f"stream_error={snap.total_failures('stream_error'):.0f} "
        f"failure_ratio={ratio:.1%}"
    )
    add(
        f"p95 time until delivered: {human_seconds(overall)} (send phase alone: "
        f"{human_seconds(send)}), computed from the histogram buckets like histogram_quantile()"
    )
    add(f"Bytes handed to the server: {human_bytes(sum(snap.sent_bytes.values()))}")
    add(f"Responses being sent right now: {snap.sending:.0f}")

    records = load_jsonl(server.delivery_log)
    if records:
        slowest = max(records, key=lambda r: r.get("duration", 0.0))
        add("")
        add(
            f"The response_delivered receiver recorded {len(records)} outcomes "
            f"({server.delivery_log.name}); the slowest:"
        )
        add(
            f"  {slowest['method']} {slowest['route']} -> {slowest['status']} "
            f"{slowest['outcome']}: {human_bytes(slowest['bytes'])} in "
            f"{human_seconds(slowest['duration'])} (send phase "
            f"{human_seconds(slowest['send_duration'])}), worker pid {slowest['pid']}"
        )
    audit_lines = [line for line in server.log_text().splitlines() if "example.audit" in line]
    if audit_lines:
        add("")
        add("Code run after delivery (on_delivered callback of the CSV export, last lines):")
        for line in audit_lines[-3:]:
            add("  " + line.split("example.audit: ", 1)[-1])

    trace = format_trace(pick_trace(load_jsonl(server.spans_file)))
    add("")
    if trace:
        add(
            "One trace (from the workers' span file): the Django server span ends when the view "
            "returns,"
        )
        add("response-delivered when the body was handed over or the client left.")
        out.extend(trace)
    if otlp_endpoint:
        add(
            f"Traces are exported to {otlp_endpoint} (OTLP/HTTP); Jaeger UI: "
            "http://127.0.0.1:16686 (service django-sent-otel-example)."
        )
    else:
        add("To see the traces in Jaeger: (cd grafana && docker compose up -d jaeger), then")
        add(
            "  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make demo   and open "
            "http://127.0.0.1:16686"
        )
    dashboards = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    add("")
    add("Where to look:")
    add(f"  metrics     {server.url}/metrics")
    add(
        "  dashboard   "
        + (", ".join(str(p.relative_to(ROOT)) for p in dashboards) or "grafana/dashboards/")
        + " (import it into Grafana)"
    )
    add(
        "  full stack  grafana/docker-compose.yml: Prometheus, Grafana on :3000 and Jaeger "
        "(scrapes 127.0.0.1:8000"
        + (")" if server.port == 8000 else f"; this demo is on port {server.port})")
    )
    add(f"  worker log  {server.log_path}")
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------


def _stop_when_exited(server: Server, stop: threading.Event) -> None:
    if server.process is not None:
        server.process.wait()
    stop.set()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m example.demo",
        description="Run the example under gunicorn with real traffic and summarise /metrics.",
    )
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (8000)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="serve this many seconds after the summary, then exit (0: exit right away); "
        "default: serve until Ctrl-C",
    )
    parser.add_argument("--rounds", type=int, default=8, help="rounds of the traffic mix (8)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.rounds < 1 or (args.duration is not None and args.duration < 0):
        parser.error("--workers and --rounds must be at least 1, --duration at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not port_available(args.port):
        print(
            f"Port {args.port} on {HOST} is in use: choose another with --port "
            f"(make demo PORT=...).",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for anything
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    otlp_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    with tempfile.TemporaryDirectory(prefix="django-sent-otel-demo-") as tmp:
        server = ExampleServer(Path(tmp), port=args.port, workers=args.workers)
        status = 0
        try:
            print(f"Starting gunicorn ({args.workers} workers) on {server.url} ...", flush=True)
            server.start(cancel=stop)
            # A server that dies later (crash, port stolen) ends the demo too.
            threading.Thread(target=_stop_when_exited, args=(server, stop), daemon=True).start()
            print("Sending traffic: full reads and abandoned downloads ...", flush=True)
            traffic = run_traffic(server.port, plan(args.rounds), stop=stop)
            if not server.running:
                raise RuntimeError(f"gunicorn exited during the traffic:\n{server.log_tail()}")
            if stop.is_set():
                raise InterruptedError
            snap = wait_for_outcomes(server.port, traffic.requests)
            print(summary(server, traffic, snap, otlp_endpoint=otlp_endpoint), flush=True)
            if args.duration is None:
                print(f"\nServing on {server.url} until Ctrl-C.", flush=True)
                stop.wait()
            elif args.duration > 0:
                print(f"\nServing on {server.url} for {args.duration:g} s.", flush=True)
                stop.wait(args.duration)
            if not server.running:
                print(f"gunicorn stopped unexpectedly:\n{server.log_tail()}", file=sys.stderr)
                status = 1
        except (InterruptedError, KeyboardInterrupt):
            print("\nInterrupted.", file=sys.stderr)
        except (RuntimeError, TimeoutError, OSError, AssertionError, httpx.HTTPError) as exc:
            print(f"\nThe demo failed: {exc}", file=sys.stderr)
            status = 1
        finally:
            print("Stopping gunicorn ...", flush=True)
            server.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return status


if __name__ == "__main__":
    sys.exit(main())
