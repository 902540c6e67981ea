"""Sphinx configuration of the documentation site (furo theme, Markdown pages through MyST).

``make docs`` builds it with ``-W --keep-going``: every warning is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import django
from django.conf import settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
# autodoc imports the modules, some of which need configured settings.
settings.configure(INSTALLED_APPS=["django_sent_otel"])
django.setup()

from django_sent_otel import __version__  # noqa: E402

project = "django-sent-otel"
author = "django-sent-otel contributors"
copyright = "2026, django-sent-otel contributors"
version = release = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
nitpicky = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"

html_theme = "furo"
html_title = f"django-sent-otel {release}"
