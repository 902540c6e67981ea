"""Security: no request data in labels or span attributes; ``/metrics`` protection holds.

- Requests carrying a unique marker in the path, query string, a custom header, a cookie, the
  Host, User-Agent, Referer, ``traceparent``/``baggage`` headers, the method and the body: the
  marker appears nowhere in the Prometheus exposition (text and OpenMetrics), in no span
  (name, attributes, status, events, resource) and in no ``Delivery``.
- The bearer token holds against missing, wrong and malformed credentials, in process and on
  real servers (gunicorn, uvicorn), including several ``Authorization`` headers, non-ASCII
  bytes and oversized values.
- The allowed networks hold against ``X-Forwarded-For`` (and ``X-Real-IP``, ``Forwarded``,
  underscore look-alikes) unless ``SENT_OTEL_METRICS_CLIENT_IP_HEADER`` opts in, and then only
  the right-most entry counts.

Settings fuzzing lives in test_fuzz.py.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
from django.test import Client, override_settings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from django_sent_otel.delivery import METHODS, Delivery
from tests.hardening.support import start
from tests.harness.clients import raw_status
from tests.harness.names import DELIVERED_TOTAL
from tests.harness.servers import Server

TOKEN = "hardening-Token_0123456789.abc~XYZ"
ROUTES = {"small/", "articles/<int:year>/", "stream/", "unmatched", "callback/", "empty/"}


def test_no_request_data_in_labels_or_span_attributes(
    registry: CollectorRegistry, spans: InMemorySpanExporter, deliveries: list[Delivery]
) -> None:
    marker = "zq" + uuid.uuid4().hex  # "z" and "q" never occur in hex ids or numbers
    client = Client()
    client.cookies[marker] = marker
    client.cookies["session"] = marker
    headers = {
        "HTTP_X_MARKER": marker,
        "HTTP_USER_AGENT": f"agent/{marker}",
        "HTTP_REFERER": f"https://{marker}.example/{marker}",
        "HTTP_HOST": f"{marker}.example",
        "HTTP_TRACEPARENT": f"00-{marker}-{marker}-01",
        "HTTP_BAGGAGE": f"user={marker},{marker}=1",
        "HTTP_X_FORWARDED_FOR": marker,
        "HTTP_AUTHORIZATION": f"Bearer {marker}",
    }
    responses = [
        client.get(f"/{marker}/", **headers),  # unmatched path
        client.get(f"/articles/2024/{marker}/", **headers),
        client.get("/small/", {"q": marker, marker: marker}, **headers),
        client.get(f"/articles/2024/?{marker}", **headers),
        client.post("/small/", {"field": marker}, **headers),
        client.generic(marker.upper(), "/small/", **headers),  # unknown method
        client.generic("PATCH", f"/empty/?{marker}", data=marker, **headers),
        client.get(f"/stream/?next={marker}", **headers),
        client.get(f"/callback/?{marker}", **headers),
    ]
    for response in responses:
        if response.streaming:
            b"".join(response.streaming_content)  # type: ignore[attr-defined]
        response.close()
    assert len(deliveries) == len(responses)

    needle = marker.lower()
    for exposition in (generate_latest(registry), generate_openmetrics(registry)):
        text = exposition.decode().lower()
        assert DELIVERED_TOTAL in text
        assert needle not in text
    for family in registry.collect():
        for sample in family.samples:
            assert sample.labels.get("method", "GET") in METHODS | {"other"}, sample
            assert sample.labels.get("route", "small/") in ROUTES, sample
    finished = spans.get_finished_spans()
    assert len(finished) == len(responses)
    for span in finished:
        assert needle not in span.to_json().lower(), span.to_json()
        assert needle not in json.dumps(dict(span.attributes or {})).lower()
    for delivery in deliveries:
        assert needle not in repr(delivery).lower(), delivery


# /metrics bearer token, in process.

BASIC = base64.b64encode(f"metrics:{TOKEN}".encode()).decode()


@override_settings(SENT_OTEL_METRICS_TOKEN=TOKEN)
@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        ("Bearer  ", 401),
        (TOKEN, 401),  # no scheme
        (f"Bearer{TOKEN}", 401),
        (f"Bearer\t{TOKEN}", 401),
        (f"Bearer {TOKEN[:-1]}", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"Bearer x{TOKEN}", 401),
        (f"Bearer {TOKEN.upper()}", 401),
        (f"Bearer {TOKEN.lower()}", 401),
        (f"Bearer {TOKEN[:10]} {TOKEN[10:]}", 401),  # a space inside the token
        (f"Bearer {TOKEN} {TOKEN}", 401),
        (f"Bearer {TOKEN},Bearer {TOKEN}", 401),  # two credentials joined by a server
        (f"Bearer {TOKEN}, Bearer wrong", 401),
        (f"Bearer {TOKEN}\x00", 401),
        (f"Bearer {TOKEN}é", 401),
        (f"Bearer {'é' * len(TOKEN)}", 401),
        ("Bearer \u202e" + TOKEN[::-1], 401),
        (f"Bearer {'x' * 100_000}", 401),
        (f"Bearer {TOKEN * 1000}", 401),
        (f"bearer {TOKEN[:-1]}", 401),  # lowercase scheme, wrong token
        (f"Basic {BASIC}", 401),
        (f"Token {TOKEN}", 401),
        (f"Digest {TOKEN}", 401),
        # RFC 9110 11.1: the scheme is case-insensitive; 1*SP separates it from the token;
        # optional whitespace around a field value is not part of it.
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),
        (f"BEARER {TOKEN}", 200),
        (f"Bearer  {TOKEN}", 200),
        (f"Bearer {TOKEN} ", 200),
    ],
)
def test_bearer_token_holds(authorization: str | None, status: int) -> None:
    extra = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = Client().get("/metrics", **extra)
    assert response.status_code == status
    if status != 200:
        assert b"django_http" not in response.content
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


# Allowed networks and forwarded-for headers, in process.

SPOOFS = [
    {"HTTP_X_FORWARDED_FOR": "10.0.0.1"},
    {"HTTP_X_FORWARDED_FOR": "10.0.0.1, 10.0.0.2"},
    {"HTTP_X_REAL_IP": "10.0.0.1"},
    {"HTTP_FORWARDED": "for=10.0.0.1"},
    {"HTTP_CLIENT_IP": "10.0.0.1"},
    {"HTTP_TRUE_CLIENT_IP": "10.0.0.1"},
    {"HTTP_X_CLUSTER_CLIENT_IP": "10.0.0.1"},
]


@override_settings(SENT_OTEL_METRICS_ALLOWED_NETWORKS=["10.0.0.0/8"])
@pytest.mark.parametrize("spoof", SPOOFS)
def test_forwarded_headers_ignored_without_opt_in(spoof: dict[str, str]) -> None:
    assert Client().get("/metrics", REMOTE_ADDR="203.0.113.7", **spoof).status_code == 403
    assert Client().get("/metrics", REMOTE_ADDR="10.9.9.9", **spoof).status_code == 200


@override_settings(
    SENT_OTEL_METRICS_ALLOWED_NETWORKS=["10.0.0.0/8"],
    SENT_OTEL_METRICS_CLIENT_IP_HEADER="HTTP_X_FORWARDED_FOR",
)
@pytest.mark.parametrize(
    ("forwarded", "status"),
    [
        ("10.0.0.1", 200),
        ("203.0.113.7, 10.0.0.1", 200),
        ("10.0.0.1, 203.0.113.7", 403),  # the client's own (left) entries are not trusted
        ("10.0.0.1,203.0.113.7", 403),
        ("10.0.0.1, ", 403),
        ("10.0.0.1, unknown", 403),
        ("10.0.0.1:8080", 403),
        ("::ffff:10.0.0.1", 403),  # an IPv4-mapped IPv6 address is not in an IPv4 network
        ("[10.0.0.1]", 403),
        ("010.000.000.001", 403),
        ("10.0.0.1\x00", 403),
        ("1" * 10_000, 403),
    ],
)
def test_only_the_rightmost_forwarded_entry_counts(forwarded: str, status: int) -> None:
    response = Client().get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR=forwarded)
    assert response.status_code == status


@override_settings(
    SENT_OTEL_METRICS_ALLOWED_NETWORKS=["10.0.0.0/8"],
    SENT_OTEL_METRICS_CLIENT_IP_HEADER="HTTP_X_REAL_IP",
)
def test_opt_in_header_is_the_only_one_trusted() -> None:
    client = Client()
    assert (
        client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_X_REAL_IP="10.0.0.1").status_code
        == 200
    )
    spoofed = client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="10.0.0.1")
    assert spoofed.status_code == 403


# Real servers: what reaches Django from raw bytes on the wire.


def raw(port: int, *headers: str | bytes) -> int:
    lines = [h.encode("latin-1") if isinstance(h, str) else h for h in headers]
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    request += b"".join(line + b"\r\n" for line in lines) + b"Connection: close\r\n\r\n"
    return raw_status(port, request)


@pytest.fixture(params=["gunicorn-sync", "uvicorn"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def secure_server(kind: str, workdir: Path, **env: str) -> Server:
    # uvicorn trusts X-Forwarded-For from --forwarded-allow-ips (default 127.0.0.1, i.e. these
    # loopback clients) and rewrites the client address before Django sees it: turn that off
    # to test what the plugin itself trusts.
    extra_args = ["--no-proxy-headers"] if kind == "uvicorn" else []
    return start(
        kind,
        workdir,
        settings="tests.hardening.settings_secure",
        record=False,
        workers=1,
        env={f"SENT_OTEL_HARDENING_{k.upper()}": v for k, v in env.items()},
        extra_args=extra_args,
    )


@pytest.mark.servers
def test_bearer_token_on_real_servers(kind: str, tmp_path: Path) -> None:
    server = secure_server(kind, tmp_path, token=TOKEN)
    try:
        port = server.port
        assert raw(port) == 401
        assert raw(port, f"Authorization: Bearer {TOKEN}") == 200
        assert raw(port, f"authorization: bearer {TOKEN}") == 200
        assert raw(port, f"Authorization: bearer {TOKEN[:-1]}") == 401
        assert raw(port, "Authorization: Bearer wrong-token-0123456789") == 401
        assert raw(port, f"Authorization: Bearer {TOKEN[:10]} {TOKEN[10:]}") == 401
        # Several Authorization headers: the server joins them, which never matches.
        for first, second in [("wrong", TOKEN), (TOKEN, "wrong"), (TOKEN, TOKEN)]:
            headers = (f"Authorization: Bearer {first}", f"Authorization: Bearer {second}")
            assert raw(port, *headers) in (400, 401), (first, second)
        assert raw(port, b"Authorization: Bearer " + TOKEN.encode() + b"\xe9") in (400, 401)
        assert raw(port, b"Authorization: Bearer \xff\xfe" + TOKEN.encode()) in (400, 401)
        assert raw(port, "Authorization: Bearer " + "x" * 6000) == 401
        # Beyond gunicorn's header size limit (rejected before Django); uvicorn passes it on.
        assert raw(port, "Authorization: Bearer " + "x" * 70_000) in (400, 401, 413, 431)
        assert raw(port, f"Authorization: Bearer {TOKEN}") == 200  # still serving
    finally:
        server.stop()


@pytest.mark.servers
def test_forwarded_headers_on_real_servers(kind: str, tmp_path: Path) -> None:
    plain = secure_server(kind, tmp_path / "plain", networks="10.0.0.0/8")
    try:
        port = plain.port
        assert raw(port) == 403
        for spoof in (
            "X-Forwarded-For: 10.0.0.1",
            "X_Forwarded_For: 10.0.0.1",
            "X-Real-IP: 10.0.0.1",
            "Forwarded: for=10.0.0.1",
        ):
            assert raw(port, spoof) == 403, spoof
        assert raw(port, "X-Forwarded-For: 8.8.8.8", "X-Forwarded-For: 10.0.0.1") == 403
    finally:
        plain.stop()
    proxied = secure_server(
        kind, tmp_path / "proxied", networks="10.0.0.0/8", client_ip_header="HTTP_X_FORWARDED_FOR"
    )
    try:
        port = proxied.port
        assert raw(port, "X-Forwarded-For: 10.0.0.1") == 200  # the trusted proxy's word
        assert raw(port, "X-Forwarded-For: 10.0.0.1, 8.8.8.8") == 403
        # A look-alike with underscores must not reach the trusted META key (servers and
        # Django drop or separate it), whatever the order.
        assert raw(port, "X-Forwarded-For: 8.8.8.8", "X_Forwarded_For: 10.0.0.1") == 403
        assert raw(port, "X_Forwarded_For: 10.0.0.1", "X-Forwarded-For: 8.8.8.8") == 403
        assert raw(port, "X-Real-IP: 10.0.0.1", "X-Forwarded-For: 8.8.8.8") == 403
    finally:
        proxied.stop()
