"""What django-sent-otel reports on each real server, per view and client behaviour.

``EXPECTED[server][cell]`` is the outcome (or, for a race, the set of outcomes) the plugin must
record for one request, where a cell is ``"<view>/<scenario>"``. The real-server tests assert
it and docs/delivered.md shows it (:func:`render_table`). Cells no server can observe say so
in their note: the plugin then reports ``delivered``, because the server (or the kernel) took
the whole body, which is what "delivered" means.

Scenarios: ``full`` read the whole response; ``abort`` reset the connection (RST) after 16 KB
of body; ``early`` reset while the view still runs; ``head`` a HEAD request; ``keep-alive``
two requests on one connection.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from tests.harness.names import CLIENT_DISCONNECT, DELIVERED, STREAM_ERROR

DISCONNECT = CLIENT_DISCONNECT
#: The request leaves no record at all (a documented limitation).
NO_RECORD = None


@dataclass(frozen=True)
class View:
    path: str
    route: str
    status: int = 200


VIEWS: dict[str, View] = {
    "small": View("/small/", "small/"),
    "big": View("/big/", "big/"),
    "stream": View("/stream/", "stream/"),
    "astream": View("/astream/", "astream/"),
    "file": View("/file/", "file/"),
    "error-stream": View("/error-stream/", "error-stream/"),
    "slow": View("/slow/", "slow/"),
    "aslow": View("/aslow/", "aslow/"),
    "empty": View("/empty/", "empty/", 204),
    "not-modified": View("/not-modified/", "not-modified/", 304),
    "articles": View("/articles/2024/", "articles/<int:year>/"),
    "callback": View("/callback/", "callback/"),
    "async-small": View("/async-small/", "async-small/"),
    "crash": View("/crash/", "crash/", 500),
}

SCENARIOS = ("full", "abort", "early", "head", "keep-alive")


@dataclass(frozen=True)
class Expect:
    """Accepted outcomes of one cell (several: client and server race), and how to show it."""

    outcomes: frozenset[str | None]
    note: str = ""
    #: What the docs show, when it is not simply the accepted outcomes.
    shown: str = ""

    @property
    def race(self) -> bool:
        return len(self.outcomes) > 1


def ok(outcome: str | None, note: str = "") -> Expect:
    return Expect(frozenset({outcome}), note)


def race(*outcomes: str, note: str) -> Expect:
    return Expect(frozenset(outcomes), note)


def blind(note: str) -> Expect:
    """An abort the server hides: reported delivered (the server took the whole body), or as
    the disconnect it was when the reset happens to arrive in time."""
    return Expect(frozenset({DELIVERED, DISCONNECT}), note, shown=DELIVERED)


# Notes, shared by the cells they explain.
KERNEL = "the 1 KB body went out in one write and the client read all of it before the reset"
SMALL_RACE = (
    "the client read the whole 1 KB body, but the reset may reach the server while it still "
    "finishes the response: either outcome"
)
BUFFERS = (
    "blind spot: the server takes the whole body into its own buffers before the reset "
    "arrives; reported delivered (or disconnect, when the reset arrives in time)"
)
WAITRESS_STREAM = (
    "blind spot: waitress buffers up to 16 MB per response, a reset is seen only while the "
    "application still iterates; reported delivered (or disconnect when it is seen)"
)
WAITRESS_EARLY = "blind spot: waitress does not watch the socket while the application runs"
DAPHNE_ASTREAM = (
    "daphne buffers without back-pressure: the generator may finish before the reset is seen"
)
DAPHNE_ERROR = "daphne hangs the connection after a body error; the outcome is still recorded"
NO_WRAPPER = (
    "without the ASGI wrapper an exception escaping Django is invisible (no close()); "
    "use django_sent_otel.asgi.get_asgi_application()"
)
NO_WRAPPER_ABORT = (
    "without the ASGI wrapper only aborts during an async body are seen; Django sends other "
    "bodies from memory without noticing the disconnect"
)

GRANIAN_WSGI_BODY = (
    "blind spot: granian (WSGI) takes a body Django hands over in one piece into its own "
    "buffers and never reports a failed write (close() carries no exception); reported "
    "delivered. Streams are seen: granian stops iterating"
)
WSGI_ASYNC_BODY = (
    "blind spot: under WSGI Django reads an async body whole before the server sends any of "
    "it, so only an exception in flight at close() could tell, and this server raises none"
)
GRANIAN_EARLY = "blind spot: granian (WSGI) does not watch the socket while the application runs"
GRANIAN_ASGI_BUFFERS = (
    "granian (ASGI) takes body messages into its own buffers without waiting for the socket: "
    "the final send may complete before the reset is seen; either outcome"
)
GRANIAN_ASGI_ERROR = (
    "granian (ASGI) had not sent the headers yet and answers 500 itself; the outcome is "
    "still recorded"
)

PROXY_BUFFERED = (
    "nginx buffers the response (proxy_buffering / uwsgi_buffering on): when it took the whole "
    "body from the application before the reset reached it (an 8 MB body in memory, a "
    "12.8 MB stream, or an async body, which Django under WSGI reads whole before sending), the "
    "application delivered it to the proxy; otherwise nginx closes the upstream connection and "
    "the application sees the disconnect"
)
PROXY_SOCKETS = (
    "unbuffered, the socket buffers on both sides of nginx can still hold most of an 8 MB "
    "body: either outcome"
)

FULL_VIEWS = tuple(VIEWS)
ABORT_VIEWS = ("small", "big", "stream", "astream", "file")
EARLY_VIEWS = ("slow", "aslow")
HEAD_VIEWS = ("small", "stream")
KEEP_ALIVE_VIEWS = ("small", "stream")


def _full(error: Expect | None = None) -> dict[str, Expect]:
    cells = {f"{v}/full": ok(DELIVERED) for v in FULL_VIEWS}
    cells["error-stream/full"] = error or ok(STREAM_ERROR)
    return cells


def _rest(aborts: dict[str, Expect], early: dict[str, Expect] | None = None) -> dict[str, Expect]:
    cells = {f"{v}/abort": aborts[v] for v in ABORT_VIEWS}
    early = early or {}
    cells.update({f"{v}/early": early.get(v, ok(DISCONNECT)) for v in EARLY_VIEWS})
    cells.update({f"{v}/head": ok(DELIVERED) for v in HEAD_VIEWS})
    cells.update({f"{v}/keep-alive": ok(DELIVERED) for v in KEEP_ALIVE_VIEWS})
    return cells


_WSGI_SOCKET = {
    "small": race(DELIVERED, DISCONNECT, note=SMALL_RACE),
    "big": ok(DISCONNECT),
    "stream": ok(DISCONNECT),
    "astream": ok(DISCONNECT),
    "file": ok(DISCONNECT),
}

# Servers that apply back-pressure: the body waits for the client, so a reset is seen.
_ASGI_BACKPRESSURE = {
    "small": ok(DELIVERED, KERNEL),
    "big": ok(DISCONNECT),
    "stream": ok(DISCONNECT),
    "astream": ok(DISCONNECT),
    "file": ok(DISCONNECT),
}


def _behind_nginx(big: str, buffered: bool = False) -> dict[str, Expect]:
    """nginx closes the upstream connection when the client leaves (proxy_ignore_client_abort
    off), so the application sees aborts; only a body nginx took whole before is delivered.
    Buffering, nginx can take a whole body as fast as the application writes it: the 12.8 MB
    streams (the async one read whole by Django under WSGI; the sync one written in 64 KB
    chunks by a warm worker within milliseconds) race like the 8 MB body."""
    return {
        "small": ok(DELIVERED, KERNEL),
        "big": race(DELIVERED, DISCONNECT, note=big),
        "stream": race(DELIVERED, DISCONNECT, note=big) if buffered else ok(DISCONNECT),
        "astream": race(DELIVERED, DISCONNECT, note=big) if buffered else ok(DISCONNECT),
        "file": ok(DISCONNECT),
    }


# A deliberate baseline of the repetition check: servers with their own behaviour spell out
# their cells (waitress and daphne look alike in shape, not in what they expect).
EXPECTED: dict[str, dict[str, Expect]] = {
    "gunicorn-sync": {**_full(), **_rest(_WSGI_SOCKET)},
    "gunicorn-gthread": {**_full(), **_rest(_WSGI_SOCKET)},
    "runserver": {**_full(), **_rest(_WSGI_SOCKET)},
    "waitress": {
        **_full(),
        **_rest(
            {
                "small": ok(DELIVERED, KERNEL),
                "big": blind(BUFFERS),
                "stream": blind(WAITRESS_STREAM),
                "astream": blind(WAITRESS_STREAM),
                "file": ok(DISCONNECT),
            },
            {"slow": ok(DELIVERED, WAITRESS_EARLY), "aslow": ok(DELIVERED, WAITRESS_EARLY)},
        ),
    },
    "uvicorn": {**_full(), **_rest(_ASGI_BACKPRESSURE)},
    "hypercorn": {**_full(), **_rest(_ASGI_BACKPRESSURE)},
    "daphne": {
        **_full(ok(STREAM_ERROR, DAPHNE_ERROR)),
        **_rest(
            {
                "small": ok(DELIVERED, KERNEL),
                "big": blind(BUFFERS),
                "stream": blind(BUFFERS),
                "astream": race(DELIVERED, DISCONNECT, note=DAPHNE_ASTREAM),
                "file": blind(BUFFERS),
            }
        ),
    },
    "granian-wsgi": {
        **_full(),
        **_rest(
            {
                "small": ok(DELIVERED, KERNEL),
                "big": blind(GRANIAN_WSGI_BODY),
                "stream": ok(DISCONNECT),
                "astream": blind(WSGI_ASYNC_BODY),
                "file": ok(DISCONNECT),
            },
            {"slow": blind(GRANIAN_EARLY), "aslow": blind(GRANIAN_EARLY)},
        ),
    },
    "granian-asgi": {
        **_full(ok(STREAM_ERROR, GRANIAN_ASGI_ERROR)),
        **_rest(
            {
                "small": ok(DELIVERED, KERNEL),
                "big": race(DELIVERED, DISCONNECT, note=GRANIAN_ASGI_BUFFERS),
                "stream": race(DELIVERED, DISCONNECT, note=GRANIAN_ASGI_BUFFERS),
                "astream": race(DELIVERED, DISCONNECT, note=GRANIAN_ASGI_BUFFERS),
                "file": race(DELIVERED, DISCONNECT, note=GRANIAN_ASGI_BUFFERS),
            }
        ),
    },
    "uwsgi": {**_full(), **_rest(_WSGI_SOCKET)},
    "uwsgi-threads": {**_full(), **_rest(_WSGI_SOCKET)},
    "gunicorn-gevent": {**_full(), **_rest(_WSGI_SOCKET)},
    "gunicorn-uvicorn": {**_full(), **_rest(_ASGI_BACKPRESSURE)},
    "nginx-gunicorn": {**_full(), **_rest(_behind_nginx(PROXY_BUFFERED, buffered=True))},
    "nginx-unbuffered": {**_full(), **_rest(_behind_nginx(PROXY_SOCKETS))},
    "nginx-accel": {**_full(), **_rest(_behind_nginx(PROXY_SOCKETS))},
    "nginx-uwsgi": {**_full(), **_rest(_behind_nginx(PROXY_BUFFERED, buffered=True))},
    # Django's own ASGI handler with the middleware alone (no wrapper): a small set.
    "uvicorn-plain": {
        "small/full": ok(DELIVERED),
        "stream/full": ok(DELIVERED),
        "astream/full": ok(DELIVERED),
        "error-stream/full": ok(NO_RECORD, NO_WRAPPER),
        "big/abort": blind(NO_WRAPPER_ABORT),
        "stream/abort": blind(NO_WRAPPER_ABORT),
        "astream/abort": ok(DISCONNECT),
        "aslow/early": ok(DISCONNECT),
        "slow/early": ok(DISCONNECT),
        "stream/head": ok(DELIVERED),
        "small/keep-alive": ok(DELIVERED),
    },
}

#: Servers whose connections really carry a second request (others close after a response
#: without Content-Length, or always).
KEEPS_ALIVE = frozenset(
    {"gunicorn-gthread", "uvicorn", "uvicorn-plain", "daphne", "hypercorn"}
    | {"nginx-gunicorn", "nginx-unbuffered", "nginx-accel", "nginx-uwsgi"}
)
#: Servers that end a chunked body cleanly after the body raised: the client sees a
#: complete-looking, truncated 200 (the plugin still records the stream_error). uWSGI over
#: the uwsgi protocol ends a response by closing the connection, which nginx takes as the end.
CUTS_CLEANLY = frozenset({"granian-wsgi", "nginx-uwsgi"})
#: Servers that answer 500 themselves when the body fails before they sent the headers.
ERROR_500 = frozenset({"granian-asgi"})
#: Servers that send a FileResponse with sendfile: Python never reads the file.
ZERO_COPY = frozenset(
    {"gunicorn-sync", "gunicorn-gthread", "uwsgi", "uwsgi-threads"}
    | {"nginx-gunicorn", "nginx-unbuffered", "nginx-accel", "nginx-uwsgi"}
)

_SHORT = {DELIVERED: "delivered", DISCONNECT: "disconnect", STREAM_ERROR: "stream_error"}


def _label(expect: Expect, notes: dict[str, int]) -> str:
    if expect.shown:
        text = _SHORT[expect.shown]
    else:
        text = " or ".join(sorted("no record" if o is None else _SHORT[o] for o in expect.outcomes))
    if expect.note:
        number = notes.setdefault(expect.note, len(notes) + 1)
        text += f" ({number})"
    return text


#: The docs' tables: the servers a client talks to directly, then production servers and
#: nginx in front (one table with every column would not fit a page).
TABLES = (
    (
        "gunicorn-sync",
        "gunicorn-gthread",
        "runserver",
        "waitress",
        "uvicorn",
        "hypercorn",
        "daphne",
        "uvicorn-plain",
    ),
    (
        "granian-wsgi",
        "granian-asgi",
        "uwsgi",
        "uwsgi-threads",
        "gunicorn-gevent",
        "gunicorn-uvicorn",
        "nginx-gunicorn",
        "nginx-unbuffered",
        "nginx-accel",
        "nginx-uwsgi",
    ),
)


def _table(servers: tuple[str, ...], notes: dict[str, int]) -> list[str]:
    cells: list[str] = []
    for scenario in SCENARIOS:
        for view in VIEWS:
            cell = f"{view}/{scenario}"
            if any(cell in EXPECTED[s] for s in servers):
                cells.append(cell)
    lines = [
        "| view / client | " + " | ".join(servers) + " |",
        "|---|" + "---|" * len(servers),
    ]
    for cell in cells:
        row = [_label(EXPECTED[s][cell], notes) if cell in EXPECTED[s] else "" for s in servers]
        lines.append(f"| `{cell}` | " + " | ".join(row) + " |")
    return lines


def render_table() -> str:
    """The Markdown tables of :data:`EXPECTED` (servers as columns), with numbered notes."""
    notes: dict[str, int] = {}
    lines: list[str] = []
    for servers in TABLES:
        lines += [*_table(servers, notes), ""]
    lines += [textwrap.fill(LEGEND, 100, break_on_hyphens=False), ""]
    for note, number in notes.items():
        lines.append(textwrap.fill(f"{number}. {note}", 100, subsequent_indent="   "))
    return "\n".join(lines) + "\n"


LEGEND = (
    "Views: `small` 1 KB, `big` 8 MB `HttpResponse`; `stream`/`astream` 200 x 64 KB sync/async "
    "streaming; `file` 50 MB `FileResponse`; `error-stream` raises after 192 KB; `slow`/`aslow` "
    "1.5 s sync/async view; `empty` 204, `not-modified` 304, `crash` 500. Clients: `full` reads "
    "everything; `abort` resets the connection (RST) after 16 KB of body; `early` resets while "
    "the view still runs; `head` sends HEAD; `keep-alive` sends two requests on one connection. "
    "`disconnect` is `client_disconnect`; `uvicorn-plain` is Django's own ASGI handler with the "
    "middleware alone (no wrapper). `nginx-gunicorn`: nginx with its defaults "
    "(`proxy_buffering on`) in front of gunicorn sync; `nginx-unbuffered`: with "
    "`proxy_buffering off`; `nginx-accel`: buffering on, every response carrying "
    "`X-Accel-Buffering: no`; `nginx-uwsgi`: `uwsgi_pass` to uWSGI (uwsgi protocol); "
    "`uwsgi`: `--http-socket`, master and one process, `uwsgi-threads` with 4 threads."
)
