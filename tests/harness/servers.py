"""Real WSGI/ASGI servers in subprocesses, for end-to-end delivery tests.

``Server(kind)`` starts ``sys.executable -m <server>`` on 127.0.0.1 with a free port, in its own
process group, logging stdout and stderr to a file; it waits (bounded) until the port accepts
connections and the application answers, and stops the whole group by PID (SIGTERM, bounded
wait, then SIGKILL)::

    with Server("gunicorn-sync", record=path) as server:
        full_read(server.port, "/small/")
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

WSGI_APP = "tests.wsgi:application"
ASGI_APP = "tests.asgi:application"
ASGI_PLAIN_APP = "tests.asgi:plain_application"

#: Every kind of server this harness can start.
KINDS = (
    "gunicorn-sync",
    "gunicorn-gthread",
    "uvicorn",
    "uvicorn-plain",
    "daphne",
    "hypercorn",
    "waitress",
    "runserver",
    "granian-wsgi",
    "granian-asgi",
    "uwsgi",
    "uwsgi-threads",
    "gunicorn-gevent",
    "gunicorn-uvicorn",
    "uwsgi-socket",
)
WSGI_KINDS = frozenset(
    {
        "gunicorn-sync",
        "gunicorn-gthread",
        "waitress",
        "runserver",
        "granian-wsgi",
        "uwsgi",
        "uwsgi-threads",
        "gunicorn-gevent",
        "uwsgi-socket",
    }
)
ASGI_KINDS = frozenset(
    {"uvicorn", "uvicorn-plain", "daphne", "hypercorn", "granian-asgi", "gunicorn-uvicorn"}
)

_ADDR_IN_USE = ("already in use", "errno 98", "[errno 48]", "eaddrinuse")


class ServerError(RuntimeError):
    """The server did not start (or stop) as expected; the message has the log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0 and release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def command(
    kind: str,
    port: int,
    *,
    workers: int = 1,
    threads: int = 4,
    app: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The argv that starts ``kind`` on ``127.0.0.1:port``."""
    py = sys.executable
    bind = f"{HOST}:{port}"
    if kind.startswith("gunicorn-"):
        default = ASGI_APP if kind in ASGI_KINDS else WSGI_APP
        argv = [py, "-m", "gunicorn", app or default, "--bind", bind, "--workers", str(workers)]
        argv += ["--worker-class", _GUNICORN_WORKERS[kind]]
        if kind == "gunicorn-gthread":
            argv += ["--threads", str(threads)]
        argv += ["--timeout", "60", "--graceful-timeout", "10", "--log-level", "info"]
        if _gunicorn_has_setting("control_socket"):
            # gunicorn 24+: one control socket per user by default; parallel runs would collide.
            argv += ["--no-control-socket"]
    elif kind in ("uvicorn", "uvicorn-plain"):
        default = ASGI_APP if kind == "uvicorn" else ASGI_PLAIN_APP
        argv = [py, "-m", "uvicorn", app or default, "--host", HOST, "--port", str(port)]
        argv += ["--http", "h11", "--loop", "asyncio", "--lifespan", "off", "--no-access-log"]
        argv += ["--timeout-graceful-shutdown", "10"]
        if workers > 1:
            argv += ["--workers", str(workers)]
    elif kind == "daphne":
        argv = [py, "-m", "daphne", "--bind", HOST, "--port", str(port), "-v", "1"]
        argv += [app or ASGI_APP]
    elif kind == "hypercorn":
        argv = [py, "-m", "hypercorn", app or ASGI_APP, "--bind", bind]
        argv += ["--workers", str(workers), "--graceful-timeout", "10"]
    elif kind == "waitress":
        argv = [py, "-m", "waitress", f"--listen={bind}", f"--threads={threads}"]
        argv += [app or WSGI_APP]
    elif kind == "runserver":
        argv = [py, "-m", "django", "runserver", bind, "--noreload", "--skip-checks"]
    elif kind in ("granian-wsgi", "granian-asgi"):
        interface = "wsgi" if kind == "granian-wsgi" else "asgi"
        argv = [py, "-m", "granian", "--interface", interface, "--host", HOST]
        argv += ["--port", str(port), "--workers", str(workers), "--no-ws"]
        argv += [
            "--workers-kill-timeout",
            "10",
            app or (WSGI_APP if interface == "wsgi" else ASGI_APP),
        ]
    elif kind in ("uwsgi", "uwsgi-threads", "uwsgi-socket"):
        proto = "uwsgi" if kind == "uwsgi-socket" else "http"
        argv = uwsgi_command(bind, app or WSGI_APP, workers=workers, proto=proto)
        if kind == "uwsgi-threads":
            argv += ["--threads", str(threads)]
    else:
        raise ValueError(f"unknown server kind {kind!r}; one of {', '.join(KINDS)}")
    # Options go before the application for servers that take it as the last argument.
    if kind in ("daphne", "waitress", "granian-wsgi", "granian-asgi"):
        return [*argv[:-1], *extra_args, argv[-1]]
    return [*argv, *extra_args]


_GUNICORN_WORKERS = {
    "gunicorn-sync": "sync",
    "gunicorn-gthread": "gthread",
    "gunicorn-gevent": "gevent",
    "gunicorn-uvicorn": "uvicorn_worker.UvicornWorker",
}


def uwsgi_binary() -> str:
    """The ``uwsgi`` program installed next to this interpreter (pip builds it)."""
    return str(Path(sys.executable).with_name("uwsgi"))


def uwsgi_command(
    socket_option: str, app: str, *, workers: int = 1, proto: str = "http"
) -> list[str]:
    """uWSGI with a master and ``workers`` processes, serving ``app`` (``module:callable``).

    ``proto`` ``"http"`` speaks HTTP on ``--http-socket``; ``"uwsgi"`` the uwsgi protocol on
    ``--socket`` (behind nginx's ``uwsgi_pass``).
    """
    option = "--http-socket" if proto == "http" else "--socket"
    module, _, callable_ = app.partition(":")
    return [
        uwsgi_binary(),
        option,
        socket_option,
        "--module",
        module,
        "--callable",
        callable_ or "application",
        "--master",
        "--processes",
        str(workers),
        "--need-app",
        "--strict",
        "--die-on-term",
        "--enable-threads",
        "--virtualenv",
        sys.prefix,
        "--reload-mercy",
        "10",
        "--worker-reload-mercy",
        "10",
    ]


@functools.cache
def _gunicorn_has_setting(name: str) -> bool:
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:  # pragma: no cover - gunicorn missing: the server fails to start anyway
        return False
    return any(getattr(setting, "name", None) == name for setting in KNOWN_SETTINGS)


def _port_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _answers(port: int, path: str, timeout: float) -> bool:
    """Whether an HTTP request to ``path`` gets a status line back (any status)."""
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request.encode())
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


class Server:
    """One real server subprocess on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        *,
        record: str | os.PathLike[str] | None = None,
        workers: int = 1,
        threads: int = 4,
        app: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        ready_path: str | None = "/metrics",
        start_timeout: float = 30.0,
        stop_timeout: float = 20.0,
        port_attempts: int = 5,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown server kind {kind!r}; one of {', '.join(KINDS)}")
        self.kind = kind
        self.record = None if record is None else str(record)
        self.workers = workers
        self.threads = threads
        self.app = app
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(env or {})
        self.ready_path = ready_path
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port_attempts = port_attempts
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="sent-otel-"))
        self.log_path = self._log_dir / f"{kind}.log"
        self.port = 0
        self.argv: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None

    # Lifecycle

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServerError(f"{self.kind} is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # only when a test asks for it
        pythonpath = [str(REPO_ROOT)]
        if env.get("PYTHONPATH"):
            pythonpath.append(env["PYTHONPATH"])
        env.update(
            PYTHONPATH=os.pathsep.join(pythonpath),
            DJANGO_SETTINGS_MODULE="tests.settings",
            PYTHONUNBUFFERED="1",
        )
        if self.record is not None:
            env["SENT_OTEL_TEST_RECORD"] = self.record
        env.update(self.extra_env)
        return env

    def start(self) -> Server:
        if self._proc is not None:
            raise ServerError(f"{self.kind} already started")
        for attempt in range(1, self.port_attempts + 1):
            self.port = free_port()
            self.argv = command(
                self.kind,
                self.port,
                workers=self.workers,
                threads=self.threads,
                app=self.app,
                extra_args=self.extra_args,
            )
            with open(self.log_path, "ab") as log:
                header = f"\n=== attempt {attempt}: {' '.join(self.argv)}\n"
                log.write(header.encode())
                log.flush()
                self._proc = subprocess.Popen(
                    self.argv,
                    cwd=REPO_ROOT,
                    env=self.environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                self._wait_ready()
                return self
            except ServerError:
                died = self._proc.poll() is not None
                self._kill()
                in_use = any(s in self.log_text()[-4000:].lower() for s in _ADDR_IN_USE)
                if died and in_use and attempt < self.port_attempts:
                    continue
                raise
        raise ServerError(f"{self.kind}: no free port after {self.port_attempts} attempts")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise ServerError(
                    f"{self.kind} exited with code {self._proc.returncode} while starting\n"
                    f"{self.log_tail()}"
                )
            now = time.monotonic()
            if _port_open(self.port) and (
                self.ready_path is None
                or _answers(self.port, self.ready_path, min(5.0, max(1.0, deadline - now)))
            ):
                return
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"{self.kind} did not accept connections on port {self.port} within "
                    f"{self.start_timeout:.0f}s\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM the process group, wait (bounded), then SIGKILL. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        # Workers that outlived their master still hold the group id: make sure they are gone.
        self._signal(signal.SIGKILL)
        return proc.returncode

    def _signal(self, signum: int) -> None:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - the group leader's pid was reused
            pass

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._signal(signal.SIGKILL)
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired as exc:  # pragma: no cover - unkillable process
            raise ServerError(f"{self.kind} (pid {proc.pid}) survived SIGKILL") from exc

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Logs

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def __repr__(self) -> str:
        state = f"pid {self._proc.pid}" if self._proc is not None else "not started"
        return f"<Server {self.kind} 127.0.0.1:{self.port} {state}>"
