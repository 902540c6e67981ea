"""The example project: its system checks, its helpers, and ``make demo`` run non-interactively."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from example.demo import parse_metrics, plan, port_available, quantile
from tests.harness.names import CLIENT_DISCONNECT
from tests.harness.otlp import OTLPReceiver
from tests.harness.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO_DEADLINE = 180.0
DEMO = [sys.executable, "-m", "example.demo"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the example's own settings, not the tests'
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.update(extra)
    return env


def _run(
    command: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run in its own process group; on timeout stop it (SIGTERM first: it stops gunicorn)."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"{command} did not finish in {timeout:.0f} s\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_example_check_has_no_issues() -> None:
    result = _run([sys.executable, "example/manage.py", "check"], timeout=60)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_example_uses_every_setup_line() -> None:
    settings = (ROOT / "example" / "settings.py").read_text()
    assert re.search(r'MIDDLEWARE = \[\s*(#[^\n]*\n\s*)*"django_sent_otel\.middleware', settings)
    assert '"django_sent_otel",' in settings
    assert 'include("django_sent_otel.urls")' in (ROOT / "example" / "urls.py").read_text()
    asgi = (ROOT / "example" / "asgi.py").read_text()
    assert "from django_sent_otel.asgi import get_asgi_application" in asgi
    conf = (ROOT / "example" / "gunicorn.conf.py").read_text()
    assert "from django_sent_otel.gunicorn import child_exit, on_starting" in conf


def test_quantile_matches_histogram_quantile() -> None:
    # 10 observations: 5 <= 0.1, 9 <= 0.5, 10 <= 1.0 (cumulative, as exported).
    buckets = {0.1: 5.0, 0.5: 9.0, 1.0: 10.0, float("inf"): 10.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.95, buckets) == pytest.approx(0.75)
    assert quantile(0.95, {0.1: 0.0, float("inf"): 4.0}) == pytest.approx(0.1)
    assert quantile(0.95, {0.1: 0.0, float("inf"): 0.0}) is None


def test_parse_metrics_sums_over_labels() -> None:
    text = "\n".join(
        [
            "# TYPE django_http_responses_delivered_total counter",
            'django_http_responses_delivered_total{method="GET",route="x",status="200"} 3',
            'django_http_responses_delivered_total{method="HEAD",route="x",status="200"} 1',
            "# TYPE django_http_response_delivery_failures_total counter",
            "django_http_response_delivery_failures_total"
            '{method="GET",reason="client_disconnect",route="x",status="200"} 2',
            "# TYPE django_http_delivery_duration_seconds histogram",
            'django_http_delivery_duration_seconds_bucket{le="0.5",method="GET",route="x"} 3',
            'django_http_delivery_duration_seconds_bucket{le="+Inf",method="GET",route="x"} 4',
            "",
        ]
    )
    snap = parse_metrics(text)
    assert snap.delivered == {"x": 4.0}
    assert snap.total_failures(CLIENT_DISCONNECT) == 2.0
    assert snap.buckets["x"] == {0.5: 3.0, float("inf"): 4.0}
    assert snap.routes == ["x"]


def test_plan_mixes_full_reads_and_aborts_on_every_view() -> None:
    steps = plan(2)
    full = {path for kind, path in steps if kind == "full"}
    assert {"/", "/export.csv", "/download/"} <= full
    assert any(path.startswith("/api/articles/") for path in full)
    assert {path for kind, path in steps if kind == "abort"} == {"/export.csv", "/download/"}


@pytest.mark.servers
def test_demo_runs_non_interactively() -> None:
    """What ``make demo DEMO_ARGS='--duration 0'`` does: gunicorn, traffic, summary, exit 0."""
    port = free_port()
    result = _run(
        [*DEMO, "--duration", "0", "--port", str(port)],
        timeout=DEMO_DEADLINE,
    )
    output = result.stdout
    assert result.returncode == 0, f"{output}\n{result.stderr}"
    totals = re.search(
        r"^Totals: delivered=(\d+) client_disconnect=(\d+) stream_error=(\d+)", output, re.M
    )
    assert totals, output
    delivered, disconnects, stream_errors = map(int, totals.groups())
    assert delivered > 0, output
    assert disconnects > 0, output
    assert stream_errors == 0, output
    for route in ("/", "api/articles/<int:year>/", "export.csv", "download/"):
        assert re.search(rf"^  {re.escape(route)} +[1-9]", output, re.M), (route, output)
    assert re.search(r"p95 time until delivered: \d+", output), output
    assert "response-delivered" in output, output  # one trace's spans
    assert f"http://127.0.0.1:{port}/metrics" in output
    assert "Stopping gunicorn" in output
    assert port_available(port), "gunicorn still holds the port after the demo exited"


@pytest.mark.servers
def test_demo_exports_spans_from_the_gunicorn_workers_over_otlp() -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, every worker exports both spans of a request."""
    with OTLPReceiver() as otlp:
        result = _run(
            [*DEMO, "--duration", "0", "--rounds", "1", "--port", str(free_port())],
            timeout=DEMO_DEADLINE,
            env=_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint),
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        assert f"Traces are exported to {otlp.endpoint}" in result.stdout
        # The workers flush in gunicorn's worker_exit hook, before the demo returns.
        aborted = otlp.wait_for(
            lambda s: (
                s.name == "response-delivered"
                and s.attributes.get("delivery.outcome") == CLIENT_DISCONNECT
            ),
            timeout=10,
        )
        spans = otlp.spans()
    servers = {s.span_id: s for s in spans if s.kind == "SERVER"}
    for span in aborted:
        assert span.status_code == "ERROR", span.short()
        assert span.attributes["http.route"] in ("export.csv", "download/"), span.short()
        parent = servers.get(span.parent_span_id)
        assert parent is not None, span.short()  # the Django server span of the same request
        assert parent.trace_id == span.trace_id
        assert span.resource.get("service.name") == "django-sent-otel-example"
