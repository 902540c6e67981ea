"""The versions README "Compatibility" names are the ones pinned and installed for the tests."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("whitenoise", "django-debug-toolbar", "djangorestframework", "channels", "sentry-sdk")


def pinned() -> dict[str, str]:
    """``name==version`` requirements of pyproject.toml (tomllib is Python 3.11+ only)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return {name.lower(): pin for name, pin in re.findall(r'"([\w.-]+)==([\w.]+)"', text)}


def documented() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- compat:start -->")[1].split("<!-- compat:end -->")[0]
    return {
        name.lower(): pin
        for name, pin in re.findall(r"^\| *([\w.-]+) *\| *([\w.]+) *\|", block, re.M)
    }


def test_every_app_is_pinned_documented_and_installed() -> None:
    pins, docs = pinned(), documented()
    for name in APPS:
        assert name in pins, f"{name} is not pinned in the test extra"
        assert docs.get(name) == pins[name], f"README says {docs.get(name)}, pinned {pins[name]}"
        assert version(name) == pins[name], f"{name} {version(name)} installed, {pins[name]} pinned"
