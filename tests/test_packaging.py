"""The built wheel and sdist are what a user installs: a fresh virtualenv, a small project.

The wheel (``make dist``: built from the sdist, so the sdist is known to rebuild) is installed
into a new virtualenv with its runtime dependencies only. A project made from the setup snippets
of docs/setup.md (``INSTALLED_APPS``, ``MIDDLEWARE``, urls, the created ``asgi.py``; the first
install line is this wheel) passes ``manage.py check`` and counts one real request through the
middleware and one through the ASGI entry point.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from pathlib import Path

import django
import pytest
import trove_classifiers

from django_sent_otel import __version__
from tests.harness.docs import ROOT
from tests.harness.venvs import fresh_venv, run, small_project

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]

# One request through the middleware (Django's test client closes the response as a WSGI
# server does), one through asgi.py's application, then the metrics both left.
REQUESTS = """\
import asyncio
import os

os.environ["DJANGO_SETTINGS_MODULE"] = "myproject.settings"
import django

django.setup()
from django.test import Client

from myproject.asgi import application

assert Client().get("/hello/").content == b"hello"


async def asgi_get(path):
    sent = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": [(b"host", b"127.0.0.1")],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


assert asyncio.run(asgi_get("/hello/")) == b"hello"
print(Client().get("/metrics").content.decode())
"""


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory: pytest.TempPathFactory, distributions: tuple[Path, Path]) -> Path:
    """A fresh virtualenv with the wheel and its runtime dependencies, nothing else."""
    _sdist, wheel = distributions
    return fresh_venv(tmp_path_factory.mktemp("venv") / "venv", wheel)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = small_project(tmp_path_factory.mktemp("project"))
    (root / "requests.py").write_text(REQUESTS)
    return root


def test_the_project_passes_manage_py_check(venv_bin: Path, project: Path) -> None:
    out = run([venv_bin / "python", "manage.py", "check"], cwd=project, timeout=120)
    assert "System check identified no issues" in out


def test_requests_are_counted_from_the_installed_wheel(venv_bin: Path, project: Path) -> None:
    out = run([venv_bin / "python", "requests.py"], cwd=project, timeout=120)
    counted = re.search(
        r'^django_http_responses_delivered_total\{method="GET",route="hello/",status="200"\} '
        r"(\S+)$",
        out,
        re.M,
    )
    assert counted, out
    assert float(counted.group(1)) == 2.0
    where = run(
        [venv_bin / "python", "-c", "import django_sent_otel; print(django_sent_otel.__file__)"],
        cwd=project,
        timeout=60,
    )
    assert where.startswith(str(venv_bin.parent)), "the package came from the checkout"


def test_the_wheel_holds_the_package_its_license_and_no_tests(
    distributions: tuple[Path, Path],
) -> None:
    _sdist, wheel = distributions
    names = zipfile.ZipFile(wheel).namelist()
    info = f"django_sent_otel-{__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    assert "django_sent_otel/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "example/", "benchmarks/", "docs/"))]
    shipped = {n for n in names if n.startswith("django_sent_otel/")}
    assert shipped == {f"django_sent_otel/{p}" for p in _tracked("src/django_sent_otel/")}
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert f"\nVersion: {__version__}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    assert "\nProvides-Extra: otel\n" in metadata
    assert re.search(r"^Requires-Dist: opentelemetry-distro.*extra == \"otel\"$", metadata, re.M)
    classifiers = re.findall(r"^Classifier: (.*)$", metadata, re.M)
    assert set(classifiers) <= trove_classifiers.classifiers
    # The Django and Python this suite runs on are listed (make test: 5.2 and 6.1).
    assert f"Framework :: Django :: {django.VERSION[0]}.{django.VERSION[1]}" in classifiers
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"Programming Language :: Python :: {python}" in classifiers
    # Development tools are dependency groups, never published extras.
    assert re.findall(r"^Provides-Extra: (.*)$", metadata, re.M) == ["otel"]


def test_the_sdist_has_what_a_rebuild_needs(distributions: tuple[Path, Path]) -> None:
    sdist, _wheel = distributions
    with tarfile.open(sdist) as archive:
        prefix = f"django_sent_otel-{__version__}/"
        names = {n.removeprefix(prefix) for n in archive.getnames()}
    needed = {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"}
    needed |= {f"src/django_sent_otel/{p}" for p in _tracked("src/django_sent_otel/")}
    assert needed <= names, sorted(needed - names)


def _tracked(prefix: str) -> set[str]:
    """The package's source files under ``prefix``, relative to it (no bytecode)."""
    base = ROOT / prefix
    return {
        p.relative_to(base).as_posix()
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
