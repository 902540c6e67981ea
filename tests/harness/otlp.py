"""A real OTLP/HTTP receiver for tests: what an OpenTelemetry Collector would see.

``OTLPReceiver`` runs a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) in a thread. It
accepts ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` body (optionally
gzip or deflate ``Content-Encoding``), decodes it with ``opentelemetry-proto`` and stores every
span as a plain :class:`ReceivedSpan`. ``/v1/metrics`` and ``/v1/logs`` are accepted and
counted, not decoded. Tests wait for spans with :meth:`OTLPReceiver.wait_for`, which blocks on
a condition variable until the predicate matches or the deadline passes (never a fixed sleep)::

    with OTLPReceiver() as otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp.endpoint
        ...
        (span,) = otlp.wait_for(lambda s: s.name == "response-delivered")
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.harness.lifecycle import Started
from tests.harness.waiting import wait_for

__all__ = ["OTLPReceiver", "ReceivedSpan", "any_value", "decode_traces"]

TRACES_PATH = "/v1/traces"
OTHER_PATHS = frozenset({"/v1/metrics", "/v1/logs"})
PROTOBUF = "application/x-protobuf"
MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it, with plain Python values.

    ``kind`` is the OpenTelemetry API name (``"SERVER"``, ``"INTERNAL"``...), ``status_code`` is
    ``"UNSET"``, ``"OK"`` or ``"ERROR"``; ids are lowercase hex, ``parent_span_id`` is ``""``
    for a root span.
    """

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    attributes: dict[str, Any]
    status_code: str
    status_message: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""

    @property
    def duration_s(self) -> float:
        return (self.end_time_unix_nano - self.start_time_unix_nano) / 1e9

    def short(self) -> str:
        """A one-line description for assertion messages."""
        parent = self.parent_span_id or "-"
        return (
            f"{self.name!r} kind={self.kind} trace={self.trace_id} span={self.span_id} "
            f"parent={parent} status={self.status_code} attrs={self.attributes}"
        )


def any_value(value: common_pb2.AnyValue) -> Any:
    """An OTLP ``AnyValue`` as the Python value it carries."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


def _enum_name(enum: Any, number: int, prefix: str) -> str:
    try:
        name: str = enum.Name(number)
    except ValueError:
        return str(number)
    return name.removeprefix(prefix)


def decode_traces(body: bytes) -> list[ReceivedSpan]:
    """Every span of a serialized ``ExportTraceServiceRequest``."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=_enum_name(trace_pb2.Span.SpanKind, span.kind, "SPAN_KIND_"),
                        attributes=_attributes(span.attributes),
                        status_code=_enum_name(
                            trace_pb2.Status.StatusCode, span.status.code, "STATUS_CODE_"
                        ),
                        status_message=span.status.message,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        resource=resource,
                        scope=scope,
                    )
                )
    return spans


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporters' sessions expect
    server: _Server
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        return None  # keep test output clean; errors are recorded on the receiver

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError(f"body of {length} bytes is too large")
        return self.rfile.read(length)

    def _answer(self, status: int, body: bytes = b"", content_type: str = PROTOBUF) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        receiver = self.server.receiver
        path = self.path.split("?", 1)[0]
        try:
            raw = self._read_body()
        except Exception as exc:
            receiver._error(f"{path}: unreadable body: {exc!r}")
            self.close_connection = True
            self._answer(400, b"unreadable body", "text/plain")
            return
        if path == TRACES_PATH:
            try:
                body = _decompress(raw, self.headers.get("Content-Encoding", ""))
                spans = decode_traces(body)
            except Exception as exc:
                receiver._error(f"{path}: undecodable export request: {exc!r}")
                self._answer(400, b"undecodable export request", "text/plain")
                return
            receiver._add(path, spans)
            response = trace_service_pb2.ExportTraceServiceResponse()
            self._answer(200, response.SerializeToString())
            return
        if path in OTHER_PATHS:
            receiver._add(path, [])
            self._answer(200)  # an empty protobuf message is zero bytes
            return
        receiver._error(f"unexpected POST {path}")
        self._answer(404, b"not found", "text/plain")

    def do_GET(self) -> None:
        self._answer(405, b"POST only", "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Do not join handler threads on close: an exporter in another process may hold a
    # keep-alive connection open, which would block server_close() until it lets go.
    block_on_close = False
    receiver: OTLPReceiver


class OTLPReceiver(Started):
    """An OTLP/HTTP endpoint on 127.0.0.1 collecting spans; use it as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._requests: dict[str, int] = {}
        self._errors: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> OTLPReceiver:
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the receiver is not running")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (exporters append ``/v1/...``)."""
        return f"http://{self._host}:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        """The full traces URL, for ``OTLPSpanExporter(endpoint=...)``."""
        return self.endpoint + TRACES_PATH

    # -- results -----------------------------------------------------------------------------

    def _add(self, path: str, spans: list[ReceivedSpan]) -> None:
        with self._cond:
            self._requests[path] = self._requests.get(path, 0) + 1
            self._spans.extend(spans)
            self._cond.notify_all()

    def _error(self, message: str) -> None:
        with self._cond:
            self._errors.append(message)
            self._cond.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        """A copy of every span received so far, in arrival order."""
        with self._cond:
            return list(self._spans)

    def requests(self, path: str = TRACES_PATH) -> int:
        """How many export requests arrived on ``path``."""
        with self._cond:
            return self._requests.get(path, 0)

    @property
    def errors(self) -> list[str]:
        """Requests the receiver could not decode (a healthy exporter produces none)."""
        with self._cond:
            return list(self._errors)

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()
            self._requests.clear()
            self._errors.clear()

    def wait_for(
        self,
        predicate: Callable[[ReceivedSpan], bool] = lambda span: True,
        *,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Wait until at least ``count`` received spans match ``predicate``; return them all.

        Raises AssertionError at the deadline, listing every span that did arrive.
        """

        def matching() -> list[ReceivedSpan]:
            return [span for span in self._spans if predicate(span)]

        def arrived() -> str:
            spans = "\n  ".join(span.short() for span in self._spans) or "(none)"
            errors = "\n  ".join(self._errors) or "(none)"
            return (
                f"{len(matching())} of {count} matching span(s) arrived; "
                f"{sum(self._requests.values())} export request(s) arrived with these spans:\n"
                f"  {spans}\nreceiver errors:\n  {errors}"
            )

        with self._cond:  # Condition.wait releases the lock while it waits for _add()
            (spans,) = wait_for(
                lambda: (found,) if len(found := matching()) >= count else None,
                timeout,
                what=f"{count} matching span(s)",
                details=arrived,
                interval=timeout,
                pause=self._cond.wait,
            )
            return spans
