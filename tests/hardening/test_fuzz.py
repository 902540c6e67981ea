"""Fuzzing with hypothesis: settings, requests, the delivery core and the ASGI wrapper.

- Settings: random types and values for every ``SENT_OTEL_*`` setting (``conf.Settings``), set
  with ``override_settings`` (which rebuilds the plugin's runtime): ``check_settings()`` never
  raises and returns only ids of ``checks.IDS``, and requests through the test client still get
  the view's normal response. Random *valid* settings: the checks accept them and the plugin
  really works with them (tracked, counted with the namespace and buckets asked for, traced
  with the provider named, ``/metrics`` open exactly to the token and networks configured).
- Requests: random methods, paths, query strings, headers and cookies: no exception, and the
  ``method`` and ``route`` of every delivery come from bounded sets.
- ``Tracker``: random event sequences (and racing threads) decide exactly one outcome.
- ``DeliveryASGIMiddleware``: random applications (messages, disconnects, exceptions, early
  returns) get exactly the outcome the contract gives them, once, and the application's own
  exception comes out unchanged.

What the fuzzing found is kept below as regression tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import prometheus_client
import pytest
from django.test import Client, override_settings
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

from django_sent_otel import checks, conf
from django_sent_otel.asgi import DeliveryASGIMiddleware
from django_sent_otel.delivery import (
    CLIENT_DISCONNECT,
    DELIVERED,
    METHODS,
    STREAM_ERROR,
    Delivery,
    Tracker,
    is_bodiless,
)
from django_sent_otel.signals import response_delivered
from tests import views
from tests.harness.names import DELIVERED_TOTAL, FAILURES_TOTAL

pytestmark = pytest.mark.timeout(300)

PREFIX = conf.PREFIX
SETTING_NAMES = sorted(
    name for name, value in vars(conf.Settings).items() if isinstance(value, property)
)
KNOWN_IDS = {f"django_sent_otel.{code}" for code in checks.IDS}
FUZZ = settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

#: Objects the fuzzed dotted paths may name; replaced before each example.
fuzz_registry = CollectorRegistry()
fuzz_provider = TracerProvider()
REGISTRY_PATH = f"{__name__}.fuzz_registry"
PROVIDER_PATH = f"{__name__}.fuzz_provider"
#: Dotted paths worth trying (arbitrary importable callables are not: the plugin calls them).
DOTTED = [
    REGISTRY_PATH,
    PROVIDER_PATH,
    "tests.slots.tracer_provider",
    "os.path",
    "os.sep",
    "no.such.module",
    "nodots",
    "tests.hardening.test_fuzz.missing_name",
    "",
]


def test_setting_names_cover_the_checks() -> None:
    """Every setting the checks know of is fuzzed (the ids' texts name them)."""
    named = set(re.findall(r"SENT_OTEL_([A-Z_]+)", " ".join(checks.IDS.values())))
    assert named <= set(SETTING_NAMES)
    assert len(SETTING_NAMES) == 14, SETTING_NAMES


# Strategies.

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=6),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.text(max_size=3)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sets(st.integers(), max_size=2),
    st.builds(object),
)
patterns = st.one_of(
    st.sampled_from([r"^/metrics$", r"^/small/$", r"^/health", "(", "[a-", "*", r"\d+", ""]),
    st.text(max_size=8),
)
numbers = st.one_of(st.integers(-5, 100), st.floats(allow_nan=True, allow_infinity=True))
token_text = st.from_regex(r"[A-Za-z0-9\-._~+/]{12,24}={0,2}", fullmatch=True)
networks = st.sampled_from(
    ["127.0.0.0/8", "10.0.0.0/8", "::1/128", "0.0.0.0/0", "300.1.1.1/8", "x", ""]
)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "ENABLED": st.booleans() | junk,
    "EXCLUDED_PATHS": st.lists(patterns, max_size=3) | st.tuples(patterns) | patterns | junk,
    "METRICS_ENABLED": st.booleans() | junk,
    "METRICS_NAMESPACE": (
        st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True) | st.text(max_size=8) | junk
    ),
    "METRICS_BUCKETS": (
        st.lists(numbers, max_size=5)
        | st.lists(st.floats(0.001, 100), min_size=1, max_size=5, unique=True).map(sorted)
        | st.lists(numbers | junk, max_size=3)
        | junk
    ),
    "METRICS_REGISTRY": st.sampled_from(DOTTED) | st.text(max_size=12) | junk,
    "METRICS_EXEMPLARS": st.booleans() | junk,
    "METRICS_TOKEN": st.none() | token_text | token_text.map(lambda t: t + "\n") | junk,
    "METRICS_ALLOWED_NETWORKS": (
        st.none() | st.lists(networks | junk, max_size=3) | networks | junk
    ),
    "METRICS_CLIENT_IP_HEADER": (
        st.sampled_from([None, "HTTP_X_FORWARDED_FOR", "REMOTE_ADDR", "http_x", "HTTP_X\n"]) | junk
    ),
    "OTEL_METRICS_ENABLED": st.booleans() | junk,
    "TRACING_ENABLED": st.booleans() | junk,
    "TRACER_PROVIDER": (
        st.sampled_from([*DOTTED, "opentelemetry.sdk.trace.TracerProvider"])
        | st.text(max_size=12)
        | junk
    ),
}
fuzzed_settings = st.fixed_dictionaries({}, optional=VALUES)


# Settings fuzzing.

fuzz_exporter = InMemorySpanExporter()
FACTORY_PATH = f"{__name__}.provider_factory"


def provider_factory() -> TracerProvider:
    """A callable returning the provider (the README allows either)."""
    return fuzz_provider


def _fresh_objects() -> None:
    global fuzz_registry, fuzz_provider, fuzz_exporter
    fuzz_registry = CollectorRegistry()
    fuzz_exporter = InMemorySpanExporter()
    fuzz_provider = TracerProvider()
    fuzz_provider.add_span_processor(SimpleSpanProcessor(fuzz_exporter))


@dataclass
class Fuzzed:
    values: dict[str, Any]
    registry: CollectorRegistry  # what METRICS_REGISTRY names (or the default one)
    exporter: InMemorySpanExporter
    deliveries: list[Delivery]


@contextmanager
def fuzzed(values: dict[str, Any]) -> Iterator[Fuzzed]:
    """Apply ``values`` with override_settings, on fresh registries and tracer provider (the
    default registry of prometheus_client is swapped too), collecting the deliveries."""
    _fresh_objects()
    deliveries: list[Delivery] = []

    def receiver(sender: Any, delivery: Delivery, **kwargs: Any) -> None:
        deliveries.append(delivery)

    with mock.patch.object(prometheus_client, "REGISTRY", CollectorRegistry()) as default:
        registry = fuzz_registry if values.get("METRICS_REGISTRY") == REGISTRY_PATH else default
        response_delivered.connect(receiver, weak=False)
        try:
            with override_settings(**{PREFIX + name: v for name, v in values.items()}):
                yield Fuzzed(values, registry, fuzz_exporter, deliveries)
        finally:
            response_delivered.disconnect(receiver)


def _excluded(patterns_value: Any, path: str) -> bool:
    return any(re.search(p, path) for p in patterns_value)


def _metrics_status(values: dict[str, Any], authorization: str | None) -> int:
    """What /metrics must answer the test client (REMOTE_ADDR 127.0.0.1) under valid settings."""
    nets = values.get("METRICS_ALLOWED_NETWORKS")
    if nets:
        client = ipaddress.ip_address("127.0.0.1")
        if not any(client in ipaddress.ip_network(n, strict=False) for n in nets):
            return 403
    token = values.get("METRICS_TOKEN")
    if token and authorization != f"Bearer {token}":
        return 401
    return 200


def _normal_responses(client: Client) -> None:
    response = client.get("/small/")
    assert (response.status_code, response.content) == (200, views.SMALL_BODY)
    response = client.get("/articles/2024/")
    assert (response.status_code, response.content) == (200, b"articles of 2024\n")
    assert client.get("/empty/").status_code == 204
    assert client.head("/small/").status_code == 200
    assert client.get("/callback/").status_code == 200


@pytest.mark.filterwarnings("ignore:__int__ returned non-int:DeprecationWarning")
@FUZZ
@given(values=fuzzed_settings)
def test_fuzzed_settings_never_break_checks_or_requests(values: dict[str, Any]) -> None:
    with fuzzed(values):
        ids = {m.id for m in checks.check_settings()}
        assert ids <= KNOWN_IDS, ids
        event("settings with errors" if ids else "settings the checks accept")
        client = Client()
        _normal_responses(client)
        assert client.get("/metrics").status_code in (200, 401, 403)


# Only values the README documents as valid.
valid_token = st.from_regex(r"[A-Za-z0-9\-._~+/]{16,32}", fullmatch=True)
VALID: dict[str, st.SearchStrategy[Any]] = {
    "ENABLED": st.booleans(),
    "EXCLUDED_PATHS": st.lists(
        st.sampled_from([r"^/metrics$", r"^/small/$", r"^/health", r"\d+", r"^/articles/", ""]),
        max_size=3,
    ),
    "METRICS_ENABLED": st.booleans(),
    "METRICS_NAMESPACE": st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)
    | st.just(""),
    "METRICS_BUCKETS": st.lists(st.floats(1e-4, 1e4), min_size=1, max_size=6, unique=True).map(
        sorted
    )
    | st.lists(st.integers(1, 1000), min_size=1, max_size=6, unique=True).map(sorted),
    "METRICS_REGISTRY": st.sampled_from([None, REGISTRY_PATH]),
    "METRICS_EXEMPLARS": st.booleans(),
    "METRICS_TOKEN": st.none() | valid_token,
    "METRICS_ALLOWED_NETWORKS": st.none()
    | st.lists(
        st.sampled_from(["127.0.0.0/8", "10.0.0.0/8", "::1/128", "0.0.0.0/0", "192.0.2.1"]),
        max_size=3,
    ),
    "METRICS_CLIENT_IP_HEADER": st.sampled_from(
        [None, "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "REMOTE_ADDR"]
    ),
    "TRACING_ENABLED": st.booleans(),
    "TRACER_PROVIDER": st.sampled_from([None, PROVIDER_PATH, FACTORY_PATH]),
}


@FUZZ
@given(values=st.fixed_dictionaries({}, optional=VALID))
def test_valid_settings_give_a_working_plugin(values: dict[str, Any]) -> None:
    with fuzzed(values) as env:
        assert checks.check_settings() == []
        client = Client()
        _normal_responses(client)
        metrics = client.get("/metrics")
        assert metrics.status_code == _metrics_status(values, None)
        token = values.get("METRICS_TOKEN")
        if token:
            authorization = f"Bearer {token}"
            response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)
            assert response.status_code == _metrics_status(values, authorization)

    tracked = values.get("ENABLED", True) and not _excluded(
        values.get("EXCLUDED_PATHS", conf.DEFAULT_EXCLUDED_PATHS), "/small/"
    )
    small = [(d.method, d.outcome) for d in env.deliveries if d.route == "small/"]
    assert small == ([("GET", DELIVERED), ("HEAD", DELIVERED)] if tracked else [])
    if not tracked:
        event("/small/ not tracked")
        return
    event("/small/ tracked")

    namespace = values.get("METRICS_NAMESPACE", "django")
    prefix = f"{namespace}_" if namespace else ""
    labels = {"method": "GET", "route": "small/"}
    delivered = env.registry.get_sample_value(
        f"{prefix}http_responses_delivered_total", {**labels, "status": "200"}
    )
    if values.get("METRICS_ENABLED", True):
        assert delivered == 1, values
        buckets = {
            s.labels["le"]
            for family in env.registry.collect()
            for s in family.samples
            if s.name == f"{prefix}http_delivery_duration_seconds_bucket"
            and s.labels["route"] == "small/"
            and s.labels["method"] == "GET"
        }
        expected = values.get("METRICS_BUCKETS", conf.DEFAULT_BUCKETS)
        assert buckets == {floatToGoString(b) for b in expected} | {"+Inf"}
    else:
        assert delivered is None

    if values.get("TRACING_ENABLED", True) and values.get("TRACER_PROVIDER"):
        spans = [
            s for s in env.exporter.get_finished_spans() if s.attributes["http.route"] == "small/"
        ]
        assert [(s.name, s.attributes["http.request.method"]) for s in spans] == [
            ("response-delivered", "GET"),
            ("response-delivered", "HEAD"),
        ]
    elif not values.get("TRACING_ENABLED", True):
        assert env.exporter.get_finished_spans() == ()


# Regression tests for what the fuzzing found.


@pytest.fixture
def isolated_registries() -> Iterator[None]:
    """Keep prometheus_client's default registry out of reach of these broken settings."""
    with mock.patch.object(prometheus_client, "REGISTRY", CollectorRegistry()):
        yield


@pytest.mark.parametrize("setting", ["METRICS_REGISTRY", "TRACER_PROVIDER"])
@pytest.mark.parametrize("value", [".x", "..x"])
def test_relative_dotted_path_is_a_check_error(setting: str, value: str) -> None:
    # import_string(".x") raises ValueError and import_string("..x") TypeError, not
    # ImportError: `manage.py check` must report E006/E010, not crash.
    with override_settings(**{PREFIX + setting: value}):
        ids = {m.id for m in checks.check_settings()}
    assert ids == {
        "django_sent_otel.E006" if setting == "METRICS_REGISTRY" else "django_sent_otel.E010"
    }


@pytest.mark.parametrize(
    "overrides",
    [
        {"METRICS_ALLOWED_NETWORKS": 5},
        {"METRICS_ALLOWED_NETWORKS": True},
        {"METRICS_ALLOWED_NETWORKS": ["127.0.0.0/8"], "METRICS_CLIENT_IP_HEADER": ["X"]},
    ],
)
def test_metrics_view_survives_invalid_settings(overrides: dict[str, Any]) -> None:
    # The view reads the runtime's validated values: an invalid network list fails closed
    # (403), an invalid header falls back to the peer address; never a 500.
    with override_settings(**{PREFIX + k: v for k, v in overrides.items()}):
        status = Client(raise_request_exception=False).get("/metrics").status_code
    assert status in (200, 403)


@pytest.mark.parametrize(
    ("overrides", "ids"),
    [
        ({"TRACER_PROVIDER": "opentelemetry.sdk.trace.TracerProvider"}, set()),
        ({"METRICS_BUCKETS": [float("inf")]}, {"django_sent_otel.E005"}),
        ({"METRICS_BUCKETS": [0.5, float("inf")]}, set()),
        ({"METRICS_BUCKETS": [float("nan")]}, {"django_sent_otel.E005"}),
    ],
)
def test_edge_settings_keep_tracking(
    overrides: dict[str, Any], ids: set[str], isolated_registries: None
) -> None:
    # A provider class is instantiated; a lone +Inf bucket (prometheus_client needs two
    # bounds) is a check error and the runtime falls back to the default buckets.
    deliveries: list[Delivery] = []

    def receiver(sender: Any, delivery: Delivery, **kwargs: Any) -> None:
        deliveries.append(delivery)

    response_delivered.connect(receiver, weak=False)
    try:
        with override_settings(**{PREFIX + k: v for k, v in overrides.items()}):
            assert {m.id for m in checks.check_settings()} == ids
            client = Client(raise_request_exception=False)
            client.get("/small/")
            metrics_status = client.get("/metrics").status_code
    finally:
        response_delivered.disconnect(receiver)
    assert (len(deliveries), metrics_status) == (1, 200)


def test_invalid_tracer_provider_is_replaced_by_the_default() -> None:
    # E010 reports it; at runtime the global provider is used and the reason logged.
    with override_settings(SENT_OTEL_TRACER_PROVIDER=REGISTRY_PATH):
        assert {m.id for m in checks.check_settings()} == {"django_sent_otel.E010"}
        status = Client(raise_request_exception=False).get("/metrics").status_code
    assert status == 200


def test_failed_bucket_change_keeps_the_metrics(isolated_registries: None) -> None:
    # An unusable bucket list falls back to the defaults; the collectors in the registry are
    # always the ones counted into, before, during and after the change.
    _fresh_objects()
    registry = fuzz_registry
    client = Client(raise_request_exception=False)
    with override_settings(SENT_OTEL_METRICS_REGISTRY=REGISTRY_PATH):
        client.get("/small/")
        with override_settings(SENT_OTEL_METRICS_BUCKETS=[float("inf")]):
            client.get("/small/")
        client.get("/small/")
    labels = {"method": "GET", "route": "small/", "status": "200"}
    assert registry.get_sample_value(DELIVERED_TOTAL, labels) == 3


def test_excluded_paths_string_falls_back_to_the_default() -> None:
    # The check reports E002; at runtime list("^/health$") would make "/" a pattern matching
    # every path. The runtime falls back to the default instead.
    deliveries: list[Delivery] = []

    def receiver(sender: Any, delivery: Delivery, **kwargs: Any) -> None:
        deliveries.append(delivery)

    response_delivered.connect(receiver, weak=False)
    try:
        with override_settings(SENT_OTEL_EXCLUDED_PATHS="^/health$"):
            Client().get("/small/")
    finally:
        response_delivered.disconnect(receiver)
    assert len(deliveries) == 1


@pytest.mark.parametrize(
    ("setting", "value"),
    [("METRICS_TOKEN", "abcdefghijklmnopqrstuvwx\n"), ("METRICS_CLIENT_IP_HEADER", "HTTP_X\n")],
)
def test_checks_reject_a_trailing_newline(setting: str, value: str) -> None:
    # `$` also matches before a final newline: a token read from a secrets file keeps its
    # newline and would never match the stripped header. The checks use full matches.
    with override_settings(**{PREFIX + setting: value}):
        assert checks.check_settings() != []


# Request fuzzing.

ROUTES = {
    "small/",
    "big/",
    "stream/",
    "astream/",
    "file/",
    "error-stream/",
    "slow/",
    "aslow/",
    "empty/",
    "not-modified/",
    "articles/<int:year>/",
    "callback/",
    "async-small/",
    "crash/",
    "unmatched",
}
safe_text = st.text(
    alphabet=st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=30
)
request_paths = st.one_of(
    st.sampled_from(["/small/", "/articles/1999/", "/empty/", "/not-modified/", "/callback/"]),
    st.text(max_size=20).map(lambda s: "/" + s),
    st.integers().map(lambda n: f"/articles/{n}/"),
)


@settings(max_examples=500, deadline=None, database=None)
@given(
    method=st.sampled_from(sorted(METHODS)) | st.from_regex(r"[A-Z]{1,12}", fullmatch=True),
    path=request_paths,
    query=safe_text,
    header=safe_text,
    cookie=st.from_regex(r"[A-Za-z0-9]{1,20}", fullmatch=True),
)
def test_fuzzed_requests_bounded_labels(
    method: str, path: str, query: str, header: str, cookie: str
) -> None:
    deliveries: list[Delivery] = []

    def receiver(sender: Any, delivery: Delivery, **kwargs: Any) -> None:
        deliveries.append(delivery)

    client = Client()
    client.cookies["fuzz"] = cookie
    response_delivered.connect(receiver, weak=False)
    try:
        response = client.generic(
            method, path, QUERY_STRING=query, HTTP_X_FUZZ=header, HTTP_USER_AGENT=header
        )
    finally:
        response_delivered.disconnect(receiver)
    assert response.status_code < 600
    if path == "/metrics":
        assert deliveries == []
        return
    assert len(deliveries) == 1, deliveries
    delivery = deliveries[0]
    assert delivery.method in METHODS | {"other"}
    assert delivery.route in ROUTES
    assert delivery.method == (method if method in METHODS else "other")


# The delivery core.


class Sink:
    on_return = True

    def __init__(self) -> None:
        self.returned = 0
        self.deliveries: list[Delivery] = []

    def handler_returned(self, tracker: Tracker) -> None:
        self.returned += 1

    def finished(self, tracker: Tracker) -> None:
        self.deliveries.append(tracker.delivery)


events = st.lists(
    st.one_of(
        st.tuples(st.just("returned"), st.sampled_from([200, 204, 304, 404, 500])),
        st.tuples(st.just("bytes"), st.integers(0, 10_000)),
        st.tuples(st.just("finish"), st.sampled_from([None, CLIENT_DISCONNECT, STREAM_ERROR])),
        st.tuples(st.just("discard"), st.none()),
    ),
    max_size=12,
)


@settings(max_examples=1000, deadline=None, database=None)
@given(method=st.sampled_from(["GET", "HEAD", "POST", "BREW", ""]), script=events)
def test_tracker_decides_once(method: str, script: list[tuple[str, Any]]) -> None:
    sink = Sink()
    tracker = Tracker(method, [sink], request=object())
    expected: tuple[str | None, int] | None = None  # (reason, bytes) of the first finish
    open_, returned, sent = True, False, 0
    for kind, arg in script:
        if kind == "returned":
            tracker.handler_returned(route="r/", status_code=arg)
            if open_ and not returned:
                returned = True
        elif kind == "bytes":
            tracker.add_bytes(arg)
            sent += arg
        elif kind == "finish":
            result = tracker.finish(arg)
            if open_:
                open_ = False
                expected = (arg, sent)
                assert result is True and tracker.reason == arg
            else:
                assert result is False
        elif kind == "discard":
            tracker.discard()
            if open_ and not returned:
                open_ = False
    assert sink.returned == int(returned)
    assert tracker.done == (not open_)
    if expected is None:
        assert sink.deliveries == []
        return
    (delivery,) = sink.deliveries
    reason, sent_then = expected
    assert (delivery.reason, delivery.outcome) == (reason, reason or DELIVERED)
    assert delivery.bytes_sent == sent_then
    assert delivery.method == (method if method in METHODS else "other")
    assert delivery.duration >= delivery.send_duration >= 0
    assert tracker.request is None and tracker.response is None and tracker.callbacks is None


def test_tracker_racing_finishers_decide_once() -> None:
    """Eight threads finish the same tracker at once, 200 times: one delivery each time."""
    for round_ in range(200):
        sink = Sink()
        tracker = Tracker("GET", [sink])
        barrier = threading.Barrier(8, timeout=10)
        results: list[Any] = []

        def finisher(
            tracker: Tracker, barrier: threading.Barrier, results: list[Any], reason: str | None
        ) -> None:
            barrier.wait()
            results.append(tracker.finish(reason))

        threads = [
            threading.Thread(
                target=finisher, args=(tracker, barrier, results, [None, CLIENT_DISCONNECT][i % 2])
            )
            for i in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert not any(t.is_alive() for t in threads)
        assert len(sink.deliveries) == 1, round_
        assert results.count(True) == 1 and results.count(False) == 7


# The ASGI wrapper.

actions = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.sampled_from([200, 204, 304, 404, 500])),
        st.tuples(st.just("body"), st.booleans()),  # more_body
        st.tuples(st.just("receive"), st.sampled_from(["http.request", "http.disconnect"])),
        st.tuples(st.just("raise"), st.sampled_from(["error", "cancel", "disconnect"])),
        st.tuples(st.just("return"), st.none()),
    ),
    max_size=8,
)


class AppError(Exception):
    pass


def expected_outcome(method: str, script: list[tuple[str, Any]]) -> tuple[str, int]:
    """The contract's outcome for a scripted application: (outcome, status)."""
    status = 0
    for action, arg in script:
        if action == "start":
            status = arg
            if is_bodiless(method, arg):
                return DELIVERED, status
        elif action == "body" and not arg:
            return DELIVERED, status
        elif action == "receive" and arg == "http.disconnect":
            return CLIENT_DISCONNECT, status
        elif action == "raise":
            return (STREAM_ERROR if arg == "error" else CLIENT_DISCONNECT), status
        elif action == "return":
            break
    return CLIENT_DISCONNECT, status


def scripted_app(script: list[tuple[str, Any]], raised: list[BaseException]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for action, arg in script:
            if action == "start":
                await send({"type": "http.response.start", "status": arg, "headers": []})
            elif action == "body":
                await send({"type": "http.response.body", "body": b"x" * 10, "more_body": arg})
            elif action == "receive":
                await receive()
            elif action == "raise":
                exc: BaseException = {
                    "error": AppError("the application failed"),
                    "cancel": asyncio.CancelledError(),
                    "disconnect": ConnectionResetError("reset by peer"),
                }[arg]
                raised.append(exc)
                raise exc
            elif action == "return":
                return

    return app


@FUZZ
@given(method=st.sampled_from(["GET", "HEAD", "POST"]), script=actions)
def test_asgi_wrapper_outcome_matches_contract(
    method: str, script: list[tuple[str, Any]], registry: CollectorRegistry
) -> None:
    raised: list[BaseException] = []
    wrapper = DeliveryASGIMiddleware(scripted_app(script, raised))
    receive_queue = [m for a, m in script if a == "receive"]

    async def receive() -> dict[str, Any]:
        kind = receive_queue.pop(0) if receive_queue else "http.request"
        return {"type": kind, "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    scope = {"type": "http", "method": method, "path": "/fuzz/", "headers": []}

    def count() -> dict[tuple[str, str, str, str], float]:
        found: dict[tuple[str, str, str, str], float] = {}
        for family in registry.collect():
            for s in family.samples:
                if s.name == DELIVERED_TOTAL:
                    outcome = DELIVERED
                elif s.name == FAILURES_TOTAL:
                    outcome = s.labels["reason"]
                else:
                    continue
                key = (s.labels["method"], s.labels["route"], s.labels["status"], outcome)
                found[key] = s.value
        return found

    before = count()
    caught: BaseException | None = None
    try:
        asyncio.run(wrapper(scope, receive, send))
    except BaseException as exc:  # the application's own exception, unchanged
        caught = exc
    if raised and isinstance(raised[0], asyncio.CancelledError):
        assert isinstance(caught, asyncio.CancelledError)  # asyncio re-creates it
    else:
        assert caught is (raised[0] if raised else None)
    after = count()
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    outcome, status = expected_outcome(method, script)
    assert changed == {(method, "unmatched", str(status), outcome): 1}, (script, changed)
