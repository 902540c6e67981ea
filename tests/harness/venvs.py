"""The built distributions and fresh virtualenvs, for tests that install the package as users do.

``make dist`` (part of ``make test``) builds the sdist and, from it, the wheel into ``dist/`` and
sets ``SENT_OTEL_DIST=dist`` for the suite; run alone, the tests build them once into a temporary
directory. Fresh virtualenvs get their packages through pip's cache (nothing is downloaded twice).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness.docs import ROOT, page, recipe

#: Names the directory holding the built sdist and wheel (relative to the repository).
DIST_ENV = "SENT_OTEL_DIST"
#: Bounds of the slow steps: a build, an install from pip's cache.
BUILD_TIMEOUT = 300
INSTALL_TIMEOUT = 300


#: Variables of this test process a user's shell would not have.
FOREIGN_ENV = ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR")


def user_env(**extra: str) -> dict[str, str]:
    """This process's environment without what the test suite set up for itself."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env = {k: v for k, v in env.items() if not k.startswith(("OTEL_", "SENT_OTEL_TEST"))}
    return env | extra


def run(
    argv: list[str | os.PathLike[str]],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a command in a user's environment; on failure raise AssertionError with its output.

    Returns stdout.
    """
    result = subprocess.run(
        [str(a) for a in argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=user_env() if env is None else env,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, argv))} exited with {result.returncode}\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result.stdout


def distributions(tmp: Path) -> tuple[Path, Path]:
    """``(sdist, wheel)`` from ``$SENT_OTEL_DIST``, else built now into ``tmp``."""
    named = os.environ.get(DIST_ENV)
    if named:
        where = ROOT / named
    else:
        where = tmp
        run([sys.executable, "-m", "build", "--outdir", where, ROOT], timeout=BUILD_TIMEOUT)
    (sdist,) = where.glob("django_sent_otel-*.tar.gz")
    (wheel,) = where.glob("django_sent_otel-*-py3-none-any.whl")
    return sdist, wheel


def fresh_venv(path: Path, *requirements: str | os.PathLike[str], with_pip: bool = False) -> Path:
    """A new virtualenv at ``path`` with ``requirements``; returns its ``bin`` directory.

    This interpreter's pip installs into it (``pip --python``), so it needs no pip of its own
    unless ``with_pip`` (a recipe that runs ``pip install`` itself).
    """
    run(
        [sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), path],
        timeout=INSTALL_TIMEOUT,
    )
    bin_dir = path / "bin"
    if requirements:
        run(
            [sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "-q",
             *requirements],
            timeout=INSTALL_TIMEOUT,
        )  # fmt: skip
    return bin_dir


def small_project(root: Path) -> Path:
    """A project ``myproject`` made from the snippets of docs/setup.md, in ``root``.

    Settings with the ``INSTALLED_APPS`` and ``MIDDLEWARE`` lines, the urls with
    ``/metrics``, the ``asgi.py`` the page creates, and a ``wsgi.py`` as Django's and Wagtail's
    project templates write it (``setdefault`` of ``DJANGO_SETTINGS_MODULE``). ``GET /hello/``
    answers ``hello``.
    """
    setup = page("setup")
    package = root / "myproject"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(
        'SECRET_KEY = "not-a-secret-only-a-test-project"\n'
        "DEBUG = False\n"
        'ALLOWED_HOSTS = ["testserver", "127.0.0.1"]\n'
        'ROOT_URLCONF = "myproject.urls"\n'
        "DATABASES = {}\n"
        "USE_TZ = True\n"
        "INSTALLED_APPS = []\n"
        f"{recipe(setup, 'installed-apps')}{recipe(setup, 'middleware')}"
    )
    (package / "urls.py").write_text(
        "from django.http import HttpResponse\n"
        "from django.urls import include, path\n\n"
        f"{recipe(setup, 'urls')}"
        'urlpatterns.append(path("hello/", lambda request: HttpResponse("hello")))\n'
    )
    (package / "asgi.py").write_text(recipe(setup, "asgi-py"))
    (package / "wsgi.py").write_text(
        "import os\n\n"
        "from django.core.wsgi import get_wsgi_application\n\n"
        'os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")\n\n'
        "application = get_wsgi_application()\n"
    )
    (root / "manage.py").write_text(
        "import os\n"
        "import sys\n\n"
        "from django.core.management import execute_from_command_line\n\n"
        'os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")\n'
        "execute_from_command_line(sys.argv)\n"
    )
    return root
