"""GET /metrics: formats, compression, protection, and the metrics it exposes."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from django.test import Client, override_settings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from django_sent_otel.metrics import DeliveryMetrics, get_metrics
from tests.harness.names import (
    CLIENT_DISCONNECT,
    DELIVERED,
    DELIVERED_TOTAL,
    DELIVERY_DURATION,
    SEND_DURATION,
    SENDING,
)
from tests.harness.scrape import Scrape
from tests.test_docs import documented_metrics

pytestmark = pytest.mark.usefixtures("registry")

TOKEN = "s3cret-token-0123456789"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def test_text_format() -> None:
    Client().get("/small/")
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    assert families["django_http_responses_delivered"].type == "counter"
    assert families[DELIVERY_DURATION].type == "histogram"
    assert families[SENDING].type == "gauge"


def test_openmetrics_with_exemplar(spans: InMemorySpanExporter) -> None:
    Client().get("/small/")
    (span,) = spans.get_finished_spans()
    trace_id = format(span.context.trace_id, "032x")
    response = Client().get("/metrics", HTTP_ACCEPT=OPENMETRICS)
    assert response["Content-Type"].startswith("application/openmetrics-text")
    text = response.content.decode()
    assert text.rstrip().endswith("# EOF")
    exemplar_lines = [line for line in text.splitlines() if "trace_id" in line]
    assert any(line.startswith(DELIVERED_TOTAL) for line in exemplar_lines)
    assert any(line.startswith(f"{DELIVERY_DURATION}_bucket") for line in exemplar_lines)
    assert any(line.startswith(f"{SEND_DURATION}_bucket") for line in exemplar_lines)
    assert all(f'trace_id="{trace_id}"' in line for line in exemplar_lines)


def test_no_exemplar_without_a_sampled_span() -> None:
    Client().get("/small/")
    text = Client().get("/metrics", HTTP_ACCEPT=OPENMETRICS).content.decode()
    assert "trace_id" not in text


def test_gzip() -> None:
    response = Client().get("/metrics", HTTP_ACCEPT_ENCODING="gzip")
    assert response["Content-Encoding"] == "gzip"
    assert b"django_http_responses_sending" in gzip.decompress(response.content)


@pytest.mark.parametrize(
    ("accept_encoding", "compressed"),
    [("GZIP", True), ("br, gzip;q=0.8", True), ("br, identity", False), ("", False)],
)
def test_gzip_negotiation(accept_encoding: str, compressed: bool) -> None:
    """prometheus_client's own rule: content-coding tokens are case-insensitive."""
    response = Client().get("/metrics", HTTP_ACCEPT_ENCODING=accept_encoding)
    assert response.has_header("Content-Encoding") is compressed
    body = gzip.decompress(response.content) if compressed else response.content
    assert b"django_http_responses_sending" in body


def test_post_not_allowed() -> None:
    assert Client().post("/metrics").status_code == 405


@override_settings(SENT_OTEL_METRICS_TOKEN=TOKEN)
@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong-token-0123456789", 401),
        (f"Basic {TOKEN}", 401),
        (f"Bearer {TOKEN}x", 401),
        ("Bearer", 401),
        ("", 401),
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),
    ],
)
def test_bearer_token(header: str | None, status: int) -> None:
    extra: dict[str, Any] = {} if header is None else {"HTTP_AUTHORIZATION": header}
    response = Client().get("/metrics", **extra)
    assert response.status_code == status
    if status == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert b"django_http" not in response.content


@override_settings(SENT_OTEL_METRICS_ALLOWED_NETWORKS=["10.0.0.0/8", "::1/128"])
@pytest.mark.parametrize(
    ("remote", "forwarded", "status"),
    [
        ("10.1.2.3", None, 200),
        ("::1", None, 200),
        ("192.168.1.1", None, 403),
        ("not-an-ip", None, 403),
        ("", None, 403),
        # Without the opt-in header setting, X-Forwarded-For is never trusted.
        ("192.168.1.1", "10.0.0.1", 403),
    ],
)
def test_allowed_networks(remote: str, forwarded: str | None, status: int) -> None:
    extra: dict[str, Any] = {"REMOTE_ADDR": remote}
    if forwarded:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    assert Client().get("/metrics", **extra).status_code == status


# The trusted proxy header's edge cases are in tests/hardening/test_security.py.


@override_settings(
    SENT_OTEL_METRICS_TOKEN=TOKEN, SENT_OTEL_METRICS_ALLOWED_NETWORKS=["127.0.0.0/8"]
)
def test_token_and_network_together() -> None:
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1", **auth).status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="8.8.8.8", **auth).status_code == 403
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401


@pytest.mark.parametrize(
    "token", [12345, "short", f"{TOKEN}\n", "has space in it 0123456789", ["a-list"]]
)
def test_an_invalid_token_fails_closed(token: Any) -> None:
    with override_settings(SENT_OTEL_METRICS_TOKEN=token):
        assert Client().get("/metrics").status_code == 401
        auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        assert Client().get("/metrics", **auth).status_code == 401


def test_an_empty_token_means_no_token() -> None:
    with override_settings(SENT_OTEL_METRICS_TOKEN=""):
        assert Client().get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("networks", "status"),
    [
        (5, 403),  # not a list: nobody
        ("127.0.0.0/8", 403),  # a string, not a list: nobody
        (["not-a-network"], 403),  # every entry invalid: nobody
        (["not-a-network", "127.0.0.0/8"], 200),  # the invalid entry is skipped
        ([], 200),  # an empty list is the same as None
    ],
)
def test_invalid_networks_fail_closed(networks: Any, status: int) -> None:
    with override_settings(SENT_OTEL_METRICS_ALLOWED_NETWORKS=networks):
        assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == status


@pytest.mark.parametrize("header", [["HTTP_X_FORWARDED_FOR"], "x-forwarded-for", 7])
def test_an_invalid_client_ip_header_uses_the_peer_address(header: Any) -> None:
    with override_settings(
        SENT_OTEL_METRICS_ALLOWED_NETWORKS=["10.0.0.0/8"], SENT_OTEL_METRICS_CLIENT_IP_HEADER=header
    ):
        spoofed = {"HTTP_X_FORWARDED_FOR": "10.0.0.1"}
        assert Client().get("/metrics", REMOTE_ADDR="8.8.8.8", **spoofed).status_code == 403
        assert Client().get("/metrics", REMOTE_ADDR="10.1.1.1").status_code == 200


def test_login_required_middleware() -> None:
    from django.conf import settings
    from django.core.checks.registry import registry

    # Installing django.contrib.auth registers its system checks for good: restore them.
    registered = set(registry.registered_checks)
    try:
        _login_required_metrics_and_site(settings)
    finally:
        registry.registered_checks = registered


def _login_required_metrics_and_site(settings: Any) -> None:
    with override_settings(
        INSTALLED_APPS=[
            *settings.INSTALLED_APPS,
            "django.contrib.auth",
            "django.contrib.contenttypes",
        ],
        MIDDLEWARE=[
            *settings.MIDDLEWARE,
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.auth.middleware.LoginRequiredMiddleware",
        ],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    ):
        assert Client().get("/metrics").status_code == 200
        assert Client().get("/small/").status_code == 302  # the rest of the site is protected


def test_metrics_are_created_once_per_registry() -> None:
    registry = CollectorRegistry()
    first = get_metrics(registry, "django", (0.1, 1.0))
    assert get_metrics(registry, "django", (0.1, 1.0)) is first
    # A bucket change replaces the collectors instead of raising "Duplicated timeseries".
    second = get_metrics(registry, "django", (0.5, 5.0))
    assert second is not first
    other = get_metrics(registry, "shop", (0.1, 1.0))
    names = {s.name for f in registry.collect() for s in f.samples}
    assert "shop_http_responses_sending" in names and SENDING in names
    assert other.namespace == "shop"


@override_settings(SENT_OTEL_METRICS_NAMESPACE="shop", SENT_OTEL_METRICS_BUCKETS=[0.5, 60])
def test_namespace_and_buckets_settings(registry: CollectorRegistry) -> None:
    Client().get("/small/")
    text = Client().get("/metrics").content.decode()
    assert (
        'shop_http_delivery_duration_seconds_bucket{le="60.0",method="GET",route="small/"} 1.0'
        in text
    )
    assert "django_http" not in text


@override_settings(SENT_OTEL_METRICS_ENABLED=False)
def test_metrics_disabled(registry: CollectorRegistry) -> None:
    Client().get("/small/")
    assert registry.get_sample_value(SENDING) is None


def test_direct_use_of_delivery_metrics() -> None:
    from django_sent_otel.delivery import Delivery

    registry = CollectorRegistry()
    metrics = DeliveryMetrics(registry=registry, namespace="x")
    for reason in (None, CLIENT_DISCONNECT, CLIENT_DISCONNECT):
        metrics.record(Delivery(reason or DELIVERED, reason, "GET", "a/", 200, 10, 0.2, 0.1))
    labels = {"method": "GET", "route": "a/", "status": "200"}
    assert registry.get_sample_value("x_http_responses_delivered_total", labels) == 1
    assert (
        registry.get_sample_value(
            "x_http_response_delivery_failures_total", {**labels, "reason": CLIENT_DISCONNECT}
        )
        == 2
    )
    assert (
        registry.get_sample_value(
            "x_http_response_sent_bytes_total", {"method": "GET", "route": "a/"}
        )
        == 30
    )


def _exemplar_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "trace_id" in line]


def test_exemplars_are_throttled_per_series(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_sent_otel import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "EXEMPLAR_INTERVAL", 3600.0)
    Client().get("/small/")
    Client().get("/small/")
    first, second = spans.get_finished_spans()
    text = Client().get("/metrics", HTTP_ACCEPT=OPENMETRICS).content.decode()
    lines = _exemplar_lines(text)
    assert lines  # the first request's trace, on each series it touched
    assert all(format(first.context.trace_id, "032x") in line for line in lines)
    assert not any(format(second.context.trace_id, "032x") in line for line in lines)

    monkeypatch.setattr(metrics_module, "EXEMPLAR_INTERVAL", 0.0)
    Client().get("/small/")
    third = spans.get_finished_spans()[2]
    text = Client().get("/metrics", HTTP_ACCEPT=OPENMETRICS).content.decode()
    counter = [line for line in _exemplar_lines(text) if line.startswith(DELIVERED_TOTAL)]
    assert len(counter) == 1 and format(third.context.trace_id, "032x") in counter[0]


@pytest.mark.parametrize(("disable", "created"), [("True", False), ("", True)])
def test_prometheus_disable_created_series_is_honoured(disable: str, created: bool) -> None:
    """prometheus_client reads the switch at import: check it in a fresh interpreter."""
    import os
    import subprocess
    import sys

    code = (
        "from prometheus_client import CollectorRegistry, generate_latest\n"
        "from django_sent_otel.delivery import Delivery\n"
        "from django_sent_otel.metrics import DeliveryMetrics\n"
        "r = CollectorRegistry()\n"
        "d = Delivery('delivered', None, 'GET', 'a/', 200, 1, 0.1, 0.1)\n"
        "DeliveryMetrics(registry=r).record(d)\n"
        "print(generate_latest(r).decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_DISABLE_CREATED_SERIES": disable}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert DELIVERED_TOTAL in out
    assert ("_created" in out) is created


def _table() -> dict[str, str]:
    return {name: kind for name, (kind, _labels) in documented_metrics().items()}


@pytest.mark.parametrize("multiprocess", [False, True], ids=["single-process", "multiprocess"])
def test_the_first_scrape_shows_every_family(
    multiprocess: bool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any request: every family of the metric table, no series but the gauge (at 0
    in multiprocess mode, where the workers' files are still empty)."""
    if multiprocess:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = Client().get("/metrics").content.decode()
    assert Scrape(text, "text/plain").families() == _table()
    for name in _table():
        assert f"# HELP {name}" in text and f"# TYPE {name.removesuffix('_total')}" in text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    shown = [s for s in samples if not s.name.endswith("_created")]
    assert [s.name for s in shown] == [SENDING]  # no series yet
    if multiprocess:  # no worker wrote: nothing in flight (in-process, other tests' may be)
        assert shown[0].value == 0.0
    assert list(tmp_path.iterdir()) == []
