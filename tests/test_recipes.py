"""The recipes of the docs, run exactly as the pages show them.

Where the other snippets are exercised: the install lines and the ``INSTALLED_APPS``,
``MIDDLEWARE``, urls and ``asgi.py`` snippets of docs/setup.md build the project of
``tests/test_packaging.py`` (plain install of the wheel) and of the tracing recipe below (the
``[otel]`` extra); the settings headings and metric tables are checked by ``tests/test_docs.py``,
the accuracy tables by ``tests/servers/test_outcomes.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import include, path, re_path
from prometheus_client import REGISTRY

from django_sent_otel.signals import response_delivered
from tests.harness.clients import full_read
from tests.harness.deliveries import Deliveries
from tests.harness.docs import ROOT, page, recipe
from tests.harness.otlp import OTLPReceiver
from tests.harness.servers import Server
from tests.harness.venvs import fresh_venv, run, small_project, user_env

TRACING = recipe(page("traces"), "tracing")
#: What the page shows that a test cannot use as is: the package from PyPI, Jaeger's port.
PACKAGE = '"django-sent-otel[otel]"'
ENDPOINT = "http://127.0.0.1:4318"


def page_view(request: HttpRequest, path: str) -> HttpResponse:
    return HttpResponse(f"page {path}")


#: As in a Wagtail project: /metrics, then Wagtail's catch-all page route.
urlpatterns = [
    path("", include("django_sent_otel.urls")),
    path("", include([re_path(r"^((?:[\w\-]+/)*)$", page_view, name="wagtail_serve")])),
]


@override_settings(ROOT_URLCONF=__name__)
def test_catch_all_pages_share_a_route_and_the_recipe_counts_sections(
    deliveries: Deliveries,
) -> None:
    code = recipe(page("catch-all-routes"), "catch-all-sections")
    namespace: dict[str, object] = {"__name__": "catch_all_recipe"}
    exec(compile(code, "docs/catch-all-routes.md", "exec"), namespace)
    try:
        client = Client()
        for url in ("/", "/blog/", "/blog/a-post/", "/shop/cart/", "/wp-login.php/x/"):
            assert client.get(url).status_code in (200, 404)
        routes = [d.route for d in deliveries]
        # Four pages on one route; the scanner's URL matched no pattern (a 404, "unmatched").
        assert routes == [namespace["CATCH_ALL"]] * 4 + ["unmatched"]
        scraped = client.get("/metrics").content.decode()

        def count(section: str) -> float | None:
            return REGISTRY.get_sample_value(
                "myproject_page_deliveries_total", {"section": section, "outcome": "delivered"}
            )

        assert (count("blog"), count("shop"), count("other")) == (2.0, 1.0, 1.0)
        assert 'route="^((?:[\\\\w\\\\-]+/)*)$"' in scraped
        assert "myproject_page_deliveries_total{" in scraped
    finally:
        response_delivered.disconnect(namespace["count_page"])
        REGISTRY.unregister(namespace["page_deliveries"])


def test_the_gunicorn_configuration_is_the_examples() -> None:
    conf = (ROOT / "example" / "gunicorn.conf.py").read_text(encoding="utf-8")
    shown = recipe(page("multi-worker"), "gunicorn-conf")
    start = conf.index("# docs/multi-worker.md shows this part")
    part = conf[conf.index("\n", start) + 1 : conf.index("# End of the documented part.")]
    assert shown == part


def test_the_tracing_recipe_shows_every_line_it_needs() -> None:
    assert TRACING.startswith(f"pip install {PACKAGE} gunicorn\n")
    assert "export DJANGO_SETTINGS_MODULE=myproject.settings\n" in TRACING
    assert f"export OTEL_EXPORTER_OTLP_ENDPOINT={ENDPOINT}\n" in TRACING
    assert TRACING.rstrip().splitlines()[-1] == "opentelemetry-instrument gunicorn myproject.wsgi"


class Recipe(Server):
    """gunicorn started by the recipe's lines (``bash``), in the project, on a free port."""

    def __init__(self, script: str, bin_dir: Path, project: Path, **kwargs: object) -> None:
        super().__init__("gunicorn-sync", cwd=project, **kwargs)  # type: ignore[arg-type]
        self.script = script
        self.bin_dir = bin_dir

    def arguments(self) -> list[str]:
        return ["bash", "-euc", self.script]

    def environment(self) -> dict[str, str]:
        # A user's shell in the virtualenv; the bind address and a short export delay are the
        # test's (gunicorn reads GUNICORN_CMD_ARGS, the SDK OTEL_BSP_SCHEDULE_DELAY).
        env = user_env(
            PATH=f"{self.bin_dir}:{user_env()['PATH']}",
            VIRTUAL_ENV=str(self.bin_dir.parent),
            GUNICORN_CMD_ARGS=f"--bind=127.0.0.1:{self.port} --workers=1",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        return env


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory, distributions: tuple[Path, Path]
) -> tuple[Path, Path]:
    """The recipe's install line run in a fresh virtualenv (this checkout's wheel for PyPI's)."""
    _sdist, wheel = distributions
    bin_dir = fresh_venv(tmp_path_factory.mktemp("venv") / "venv", with_pip=True)
    project = small_project(tmp_path_factory.mktemp("project"))
    install, _rest = TRACING.split("\n", 1)
    line = install.replace(PACKAGE, f'"{wheel}[otel]"')
    env = user_env(PATH=f"{bin_dir}:{user_env()['PATH']}")
    run(["bash", "-euc", f"{line} -q"], cwd=project, env=env, timeout=300)
    return bin_dir, project


@pytest.fixture
def otlp() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


def recipe_server(
    installed: tuple[Path, Path],
    otlp: OTLPReceiver,
    *,
    ready_path: str,
    ready_status: int | None = None,
    without: str | None = None,
) -> Recipe:
    """The recipe's lines after its install line, exporting to ``otlp`` (less ``without``)."""
    bin_dir, project = installed
    _install, lines = TRACING.split("\n", 1)
    script = lines.replace(ENDPOINT, otlp.endpoint)
    if without is not None:
        assert without in script
        script = script.replace(without, "")
    return Recipe(
        script, bin_dir, project, ready_path=ready_path, ready_status=ready_status, start_timeout=90
    )


@pytest.mark.servers
@pytest.mark.packaging
def test_the_tracing_recipe_sends_delivery_spans(
    installed: tuple[Path, Path], otlp: OTLPReceiver
) -> None:
    with recipe_server(installed, otlp, ready_path="/metrics", ready_status=200) as server:
        response = full_read(server.port, "/hello/")
        assert response.status == 200, server.log_tail()
        (delivered,) = otlp.wait_for(lambda s: s.name == "response-delivered", timeout=30)
        spans = otlp.wait_for(lambda s: s.span_id == delivered.parent_span_id, timeout=30)
    (parent,) = spans
    assert parent.kind == "SERVER", parent.short()
    assert parent.attributes.get("http.route") == "hello/", parent.short()
    assert delivered.trace_id == parent.trace_id
    assert delivered.attributes["django_sent_otel.delivery.outcome"] == "delivered"
    assert delivered.resource.get("service.name") == "shop"
    # The readiness checks fetched /metrics: excluded, so no span of the instrumentation's
    # (nor of the plugin's); the two spans of /hello/ are all there is.
    ours = {delivered.span_id, parent.span_id}
    others = [s.short() for s in otlp.spans() if s.span_id not in ours]
    assert not others, others


@pytest.mark.servers
@pytest.mark.packaging
def test_without_the_exported_settings_module_every_request_fails(
    installed: tuple[Path, Path], otlp: OTLPReceiver
) -> None:
    # Why the page exports DJANGO_SETTINGS_MODULE: wsgi.py's setdefault comes too late.
    export = "export DJANGO_SETTINGS_MODULE=myproject.settings\n"
    with recipe_server(installed, otlp, ready_path="/hello/", without=export) as server:
        assert full_read(server.port, "/hello/").status == 500
    assert "has no attribute 'ROOT_URLCONF'" in server.log_text()
