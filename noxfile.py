"""The supported Python/Django matrix: ``nox`` runs the suite once per pair.

``nox -s tests`` runs every pair; ``nox -s "tests(python='3.12', django='6')"`` runs one.
``nox -s fast`` skips the real-server tests (marker ``servers``).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

# With pyenv, make every installed interpreter reachable as pythonX.Y.
if shutil.which("pyenv") and "PYENV_VERSION" not in os.environ:
    versions = subprocess.run(
        ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    os.environ["PYENV_VERSION"] = ":".join(v for v in versions if v.startswith("3.1"))

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]

MATRIX = [("3.10", "5.2"), ("3.11", "5.2"), ("3.12", "6"), ("3.13", "6")]
DJANGO = {"5.2": "Django>=5.2,<6", "6": "Django>=6,<7"}


def _install(session: nox.Session, django: str) -> None:
    session.install("pip>=25.1")  # `--group` (PEP 735 dependency groups)
    session.install("-e", ".[otel]", DJANGO[django], "--group", "test")


@nox.session
@nox.parametrize(("python", "django"), MATRIX)
def tests(session: nox.Session, django: str) -> None:
    _install(session, django)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
@nox.parametrize(("python", "django"), MATRIX)
def fast(session: nox.Session, django: str) -> None:
    _install(session, django)
    session.run("python", "-m", "pytest", "-m", "not servers", *session.posargs)
