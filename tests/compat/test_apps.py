"""whitenoise, django-debug-toolbar, Django REST framework and sentry-sdk next to the plugin.

One real gunicorn (sync worker, ``wsgi.file_wrapper`` and sendfile) serves the compat project
(``tests.compat.settings_apps``). Each test checks two things: the app still does its own job
(whitenoise's headers and zero-copy file, the toolbar's panel, DRF's JSON, HTML and stream,
sentry's error event) and the plugin recorded the right outcome for the same request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.compat import views
from tests.compat.instruments import SENTRY_FILE_ENV
from tests.harness import clients
from tests.harness.data import BIG_FILE_SIZE, ensure_big_file
from tests.harness.records import Record, by_test_id, wait_for_records
from tests.harness.servers import Server

pytestmark = pytest.mark.servers

RECORD_TIMEOUT = 60.0
STATIC_NAME = "big.bin"
STATIC_PATH = f"/static/{STATIC_NAME}"
STREAM_SIZE = views.STREAM_LINES * views.STREAM_LINE_SIZE


@dataclass
class Compat:
    server: Server
    record: Path
    sentry: Path

    @property
    def port(self) -> int:
        return self.server.port

    def delivery(self, test_id: str) -> Record:
        """The one delivery record of a request (waiting, bounded, for it)."""
        try:
            (record,) = wait_for_records(self.record, 1, RECORD_TIMEOUT, select=by_test_id(test_id))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.server.log_tail(60)}") from None
        return record

    def sentry_items(self, predicate: Any, timeout: float = RECORD_TIMEOUT) -> list[Record]:
        return wait_for_records(self.sentry, 1, timeout, select=predicate)


def start(tmp_path_factory: pytest.TempPathFactory, *, sentry: bool) -> Compat:
    workdir = tmp_path_factory.mktemp("compat-sentry" if sentry else "compat-apps")
    static_root = workdir / "static"
    static_root.mkdir()
    (static_root / STATIC_NAME).symlink_to(ensure_big_file(settings.SENT_OTEL_TEST_FILE))
    record = workdir / "records.jsonl"
    events = workdir / "sentry.jsonl"
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.compat.settings_apps",
        "SENT_OTEL_COMPAT_STATIC_ROOT": str(static_root),
    }
    if sentry:
        env[SENTRY_FILE_ENV] = str(events)
    server = Server("gunicorn-sync", record=record, log_dir=workdir, env=env)
    return Compat(server.start(), record, events)


@pytest.fixture(scope="module")
def compat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    """whitenoise, the toolbar and DRF."""
    running = start(tmp_path_factory, sentry=False)
    try:
        yield running
    finally:
        running.server.stop()


@pytest.fixture(scope="module")
def compat_sentry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    """The same project with sentry-sdk's Django integration initialised as well."""
    running = start(tmp_path_factory, sentry=True)
    try:
        yield running
    finally:
        running.server.stop()


# whitenoise


def test_whitenoise_serves_its_file_through_sendfile(compat: Compat) -> None:
    response = clients.full_read(compat.port, STATIC_PATH)
    assert response.status == 200 and response.complete, response
    assert response.body_len == BIG_FILE_SIZE
    # whitenoise's own headers, untouched.
    assert response.header("Content-Length") == str(BIG_FILE_SIZE)
    assert response.header("Content-Type") == "application/octet-stream"
    assert response.header("Cache-Control") == "max-age=60, public"
    assert response.header("ETag")
    assert response.header("Last-Modified")
    record = compat.delivery(response.test_id)
    assert record["outcome"] == "delivered", record
    assert record["status_code"] == 200
    assert record["bytes_sent"] == BIG_FILE_SIZE
    assert record["file_reads"] == 0, f"sendfile was not used: {record}"


def test_whitenoise_file_cut_short_is_a_disconnect_and_still_zero_copy(compat: Compat) -> None:
    aborted = clients.abort_after(compat.port, STATIC_PATH, 16384)
    assert aborted.status == 200 and not aborted.complete, aborted
    record = compat.delivery(aborted.test_id)
    assert record["outcome"] == "client_disconnect", record
    assert record["bytes_sent"] < BIG_FILE_SIZE, record
    assert record["file_reads"] == 0, f"sendfile was not used: {record}"


def test_whitenoise_not_modified_and_head(compat: Compat) -> None:
    first = clients.full_read(compat.port, STATIC_PATH, method="HEAD")
    assert first.status == 200 and first.body_len == 0
    etag = first.header("ETag")
    assert etag
    head = compat.delivery(first.test_id)
    assert (head["outcome"], head["method"], head["bytes_sent"]) == ("delivered", "HEAD", 0)
    again = clients.full_read(compat.port, STATIC_PATH, headers={"If-None-Match": etag})
    assert again.status == 304 and again.body_len == 0
    cached = compat.delivery(again.test_id)
    assert (cached["outcome"], cached["status_code"]) == ("delivered", 304), cached


# Django REST framework


def test_drf_json(compat: Compat) -> None:
    response = clients.full_read(
        compat.port, "/api/articles/", headers={"Accept": "application/json"}, keep_body=True
    )
    assert response.status == 200, response
    assert response.header("Content-Type") == "application/json"
    assert json.loads(response.body or b"") == {"articles": views.ARTICLES}
    record = compat.delivery(response.test_id)
    assert record["outcome"] == "delivered"
    assert record["route"] == "api/articles/"
    assert record["bytes_sent"] == response.body_len


def test_drf_browsable_api(compat: Compat) -> None:
    response = clients.full_read(
        compat.port, "/api/articles/", headers={"Accept": "text/html"}, keep_body=True
    )
    assert response.status == 200, response
    assert (response.header("Content-Type") or "").startswith("text/html")
    html = (response.body or b"").decode()
    assert "Article List" in html  # the browsable API's page title, from the view's name
    assert "&quot;Delivered&quot;" in html  # the data, rendered by BrowsableAPIRenderer
    record = compat.delivery(response.test_id)
    assert record["outcome"] == "delivered"
    assert record["status_code"] == 200
    assert record["bytes_sent"] == response.body_len


def test_drf_streaming_view(compat: Compat) -> None:
    response = clients.full_read(compat.port, "/api/stream/", keep_body=True)
    assert response.status == 200 and response.complete, response
    lines = (response.body or b"").splitlines()
    assert [json.loads(line)["line"] for line in lines] == list(range(views.STREAM_LINES))
    record = compat.delivery(response.test_id)
    assert record["outcome"] == "delivered", record
    assert record["route"] == "api/stream/"
    assert record["bytes_sent"] == STREAM_SIZE == response.body_len


def test_drf_streaming_view_cut_short(compat: Compat) -> None:
    aborted = clients.abort_after(compat.port, "/api/stream/", 16384)
    assert aborted.status == 200 and not aborted.complete, aborted
    record = compat.delivery(aborted.test_id)
    assert record["outcome"] == "client_disconnect", record
    assert record["bytes_sent"] < STREAM_SIZE, record


# django-debug-toolbar


def test_debug_toolbar_renders_its_panel(compat: Compat) -> None:
    page = clients.full_read(compat.port, "/page/", keep_body=True)
    assert page.status == 200, page
    html = (page.body or b"").decode()
    assert 'id="djDebug"' in html, "the toolbar was not inserted"
    match = re.search(r'data-request-id="([0-9a-f]+)"', html)
    assert match, html[-2000:]
    record = compat.delivery(page.test_id)
    assert record["outcome"] == "delivered"
    # The plugin is outermost: it counts the page as sent, toolbar included.
    assert record["bytes_sent"] == page.body_len

    panel = clients.full_read(
        compat.port,
        f"/__debug__/render_panel/?request_id={match.group(1)}&panel_id=RequestPanel",
        keep_body=True,
    )
    assert panel.status == 200, panel
    content = json.loads(panel.body or b"")["content"]
    assert "tests.compat.views.page" in content, content[:2000]
    assert compat.delivery(panel.test_id)["outcome"] == "delivered"


# sentry-sdk


def test_sentry_captures_the_error_and_the_transaction(compat_sentry: Compat) -> None:
    compat = compat_sentry
    response = clients.full_read(compat.port, "/api/crash/")
    assert response.status == 500, response
    record = compat.delivery(response.test_id)
    assert (record["outcome"], record["status_code"]) == ("delivered", 500), record
    assert record["bytes_sent"] == response.body_len

    def crash_event(item: Record) -> bool:
        if item.get("type") != "event":
            return False
        values = item["payload"].get("exception", {}).get("values", [])
        return any(v.get("value") == views.CRASH_MESSAGE for v in values)

    (event,) = compat.sentry_items(crash_event)
    payload = event["payload"]
    exception = payload["exception"]["values"][-1]
    assert exception["type"] == "RuntimeError"
    assert exception["mechanism"]["type"] == "django"
    assert payload["request"]["url"].endswith("/api/crash/")
    assert payload["request"]["headers"]["X-Test-Id"] == response.test_id

    ok = clients.full_read(compat.port, "/api/articles/", headers={"Accept": "application/json"})
    assert ok.status == 200
    assert compat.delivery(ok.test_id)["outcome"] == "delivered"

    def articles_transaction(item: Record) -> bool:
        payload = item.get("payload", {})
        headers = payload.get("request", {}).get("headers", {})
        return item.get("type") == "transaction" and headers.get("X-Test-Id") == ok.test_id

    (transaction,) = compat.sentry_items(articles_transaction)
    assert transaction["payload"]["transaction"] == "/api/articles/"
    assert transaction["payload"]["contexts"]["trace"]["status"] == "ok"


def test_outcomes_under_sentry_wrapped_responses(compat_sentry: Compat) -> None:
    """sentry-sdk wraps every WSGI response; the plugin still sees the real end of delivery."""
    compat = compat_sentry
    streamed = clients.full_read(compat.port, "/api/stream/")
    assert streamed.status == 200 and streamed.body_len == STREAM_SIZE
    record = compat.delivery(streamed.test_id)
    assert (record["outcome"], record["bytes_sent"]) == ("delivered", STREAM_SIZE), record
    aborted = clients.abort_after(compat.port, "/api/stream/", 16384)
    assert aborted.status == 200 and not aborted.complete, aborted
    assert compat.delivery(aborted.test_id)["outcome"] == "client_disconnect"

    served = clients.full_read(compat.port, STATIC_PATH)
    assert served.status == 200 and served.body_len == BIG_FILE_SIZE
    record = compat.delivery(served.test_id)
    assert (record["outcome"], record["bytes_sent"]) == ("delivered", BIG_FILE_SIZE), record
    # sentry-sdk's WSGI middleware returns its own iterable around gunicorn's file wrapper
    # (it only passes through responses that have ``fileno``, which gunicorn's has not): the
    # file is read by Python, whatever the plugin does. docs "Compatibility" say so.
    assert record["file_reads"] is not None and record["file_reads"] > 0, record


@pytest.mark.parametrize("name", ["compat", "compat_sentry"])
def test_the_plugin_logged_nothing(name: str, request: pytest.FixtureRequest) -> None:
    """Every outcome above was decided without a warning or error of the plugin."""
    running: Compat = request.getfixturevalue(name)
    log = running.server.log_text()
    assert "django-sent-otel:" not in log, running.server.log_tail(60)
