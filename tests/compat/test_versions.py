"""The versions the docs' "Compatibility" page names are the ones pinned and installed."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from tests.harness.docs import between, page

ROOT = Path(__file__).resolve().parents[2]
APPS = ("whitenoise", "django-debug-toolbar", "djangorestframework", "channels", "sentry-sdk")


def pinned() -> dict[str, str]:
    """``name==version`` requirements of pyproject.toml (tomllib is Python 3.11+ only)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return {name.lower(): pin for name, pin in re.findall(r'"([\w.-]+)==([\w.]+)"', text)}


def documented() -> dict[str, str]:
    block = between(page("compatibility"), "compat")
    return {
        name.lower(): pin
        for name, pin in re.findall(r"^\| *([\w.-]+) *\| *([\w.]+) *\|", block, re.M)
    }


def test_every_app_is_pinned_documented_and_installed() -> None:
    pins, docs = pinned(), documented()
    for name in APPS:
        assert name in pins, f"{name} is not pinned in the test extra"
        assert docs.get(name) == pins[name], f"the docs say {docs.get(name)}, pinned {pins[name]}"
        assert version(name) == pins[name], f"{name} {version(name)} installed, {pins[name]} pinned"
