"""Which servers tell the application, while the view runs, that its client left.

``EXPECTED[server][leave]`` is True when ``on_disconnect`` callbacks run and
``is_disconnected`` turns True while the view still runs, else the note that says why not.
``tests/servers/test_seen.py`` asserts it on real servers and measures the delay from the
client leaving to the callback; the docs show both (:func:`render_table`). The medians shown
come from ``MEASURED`` (``seen-measured.json``), which that test rewrites when run with
``SENT_OTEL_UPDATE_SEEN=1``::

    SENT_OTEL_UPDATE_SEEN=1 .venv/bin/python -m pytest tests/servers/test_seen.py
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

MEASURED_PATH = Path(__file__).with_name("seen-measured.json")
#: Written by ``tests/servers/test_example_abandon.py`` (same variable).
FIGURES_PATH = Path(__file__).with_name("abandon-measured.json")
FIGURE_VIEWS = {
    "report/": "long SQLite query (`report/`)",
    "tokens/": "token stream, sync generator (`tokens/`)",
    "atokens/": "token stream, async generator (`atokens/`)",
    "steps/": "sync view in steps (`steps/`)",
}

#: How a client leaves while the view runs (see ``tests.harness.clients.LEAVES``).
LEAVES = ("reset", "close", "half-close")

GRANIAN_WSGI = (
    "granian's WSGI interface gives the application neither the connection nor a way to ask "
    "whether the client is still there: a client that left is seen only when the response "
    "is written (the delivery outcome)."
)
#: Servers in the order of the table's rows; waitress runs with
#: ``--channel-request-lookahead=1`` (without it waitress never notices the client leaving).
SERVERS = (
    "gunicorn-sync",
    "gunicorn-gthread",
    "gunicorn-gevent",
    "uwsgi",
    "waitress",
    "runserver",
    "granian-wsgi",
    "uvicorn",
    "gunicorn-uvicorn",
    "hypercorn",
    "daphne",
    "granian-asgi",
    "uvicorn-plain",
    "nginx-gunicorn",
)
EXTRA_ARGS: dict[str, tuple[str, ...]] = {"waitress": ("--channel-request-lookahead=1",)}

_BLIND: dict[str, dict[str, str]] = {
    "granian-wsgi": dict.fromkeys(LEAVES, GRANIAN_WSGI),
}

EXPECTED: dict[str, dict[str, bool | str]] = {
    kind: {leave: _BLIND.get(kind, {}).get(leave, True) for leave in LEAVES} for kind in SERVERS
}


def measured() -> dict[str, dict[str, float]]:
    """Median delays in milliseconds, per server and leave, as last measured."""
    try:
        data: dict[str, dict[str, float]] = json.loads(MEASURED_PATH.read_text())
    except FileNotFoundError:
        return {}
    return data


def render_table() -> str:
    """The Markdown table of :data:`EXPECTED` (servers as rows), with numbered notes."""
    times = measured()
    notes: dict[str, int] = {}
    lines = [
        "| server | " + " | ".join(LEAVES) + " |",
        "|---|" + "---|" * len(LEAVES),
    ]
    for kind in SERVERS:
        cells = []
        for leave in LEAVES:
            expect = EXPECTED[kind][leave]
            if expect is True:
                ms = times.get(kind, {}).get(leave)
                if ms is None:
                    cells.append("seen")
                else:
                    cells.append("seen, < 1 ms" if ms < 1 else f"seen, {ms:.0f} ms")
            else:
                number = notes.setdefault(str(expect), len(notes) + 1)
                cells.append(f"not seen ({number})")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        textwrap.fill(
            "Median delay from the client leaving (`reset`: RST; `close`: FIN; `half-close`: "
            "`shutdown(SHUT_WR)`, reading on) to the `on_disconnect` callback, 3 requests per "
            "cell on loopback, measured by `SENT_OTEL_UPDATE_SEEN=1 .venv/bin/python -m pytest "
            "tests/servers/test_seen.py` (Django 5.2). waitress runs with "
            "`--channel-request-lookahead=1`; `uvicorn-plain` is Django's ASGI handler with the "
            "middleware alone (Django cancels the request, the middleware reports it); "
            "`nginx-gunicorn` is nginx (defaults, `proxy_ignore_client_abort off`) in front of "
            "gunicorn sync.",
            100,
            break_on_hyphens=False,
        )
    )
    lines.append("")
    for note, number in notes.items():
        lines.append(textwrap.fill(f"{number}. {note}", 100, subsequent_indent="   "))
    return "\n".join(lines) + "\n"


def render_figures() -> str:
    """The docs' table of work done after the client left, before and after the example
    views watch for it (from :data:`FIGURES_PATH`)."""
    try:
        figures: dict[str, dict[str, dict[str, float]]] = json.loads(FIGURES_PATH.read_text())
    except FileNotFoundError:
        return ""
    kinds = sorted(figures)
    lines = [
        "| example view | " + " | ".join(f"{kind}: ignoring / watching" for kind in kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for route, title in FIGURE_VIEWS.items():
        cells = []
        for kind in kinds:
            numbers = figures[kind][route]
            cells.append(f"{numbers['before']:.2f} s / {numbers['after']:.3f} s")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
