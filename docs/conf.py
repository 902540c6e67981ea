"""Sphinx configuration of the documentation site (furo theme, Markdown pages through MyST).

``make docs`` builds it with ``-W --keep-going``: every warning is an error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
# autodoc imports the package, and its modules import Django's settings lazily.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
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
