"""The documentation pages as the tests read them: the site in ``docs/`` is what users see.

Tests check generated tables (between ``<!-- name:start -->`` and ``<!-- name:end -->``) and run
recipes: a fenced block right after a ``<!-- recipe:name -->`` line is run exactly as shown.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def page(name: str) -> str:
    """The Markdown source of ``docs/<name>.md``."""
    return (DOCS / f"{name}.md").read_text(encoding="utf-8")


def between(text: str, name: str) -> str:
    """The text between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    assert start in text and end in text, f"the page lacks the {start} / {end} markers"
    return text.split(start, 1)[1].split(end, 1)[0]


def recipe(text: str, name: str) -> str:
    """The body of the fenced block that follows ``<!-- recipe:name -->`` (list indent removed)."""
    found = re.search(
        rf"^( *)<!-- recipe:{re.escape(name)} -->\n+\1(`{{3,}})[^\n]*\n(.*?)^\1\2$",
        text,
        re.M | re.S,
    )
    assert found, f"no fenced block after <!-- recipe:{name} -->"
    indent = found.group(1)
    lines = found.group(3).splitlines(keepends=True)
    return "".join(line.removeprefix(indent) for line in lines)
