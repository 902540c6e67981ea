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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.lifecycle import Started
from tests.harness.waiting import wait_for

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

#: The gunicorn config a multiprocess server gets: the package's hooks (see that module).
MULTIPROCESS_CONFIG = "python:tests.harness.gunicorn_multiproc"

_ADDR_IN_USE = ("already in use", "errno 98", "[errno 48]", "eaddrinuse")


class ServerError(RuntimeError):
    """The server did not start (or stop) as expected; the message has the log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0 and release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Spec:
    """What a command builder gets: where to listen and how big to be."""

    port: int
    workers: int = 1
    threads: int = 4
    app: str | None = None

    @property
    def bind(self) -> str:
        return f"{HOST}:{self.port}"


def _gunicorn(worker_class: str, default_app: str = WSGI_APP) -> Callable[[Spec], list[str]]:
    def build(spec: Spec) -> list[str]:
        argv = [sys.executable, "-m", "gunicorn", spec.app or default_app, "--bind", spec.bind]
        argv += ["--workers", str(spec.workers), "--worker-class", worker_class]
        if worker_class == "gthread":
            argv += ["--threads", str(spec.threads)]
        argv += ["--timeout", "60", "--graceful-timeout", "10", "--log-level", "info"]
        if _gunicorn_has_setting("control_socket"):
            # gunicorn 24+: one control socket per user by default; parallel runs would collide.
            argv += ["--no-control-socket"]
        return argv

    return build


def _uvicorn(default_app: str) -> Callable[[Spec], list[str]]:
    def build(spec: Spec) -> list[str]:
        argv = [sys.executable, "-m", "uvicorn", spec.app or default_app]
        argv += ["--host", HOST, "--port", str(spec.port), "--http", "h11", "--loop", "asyncio"]
        argv += ["--lifespan", "off", "--no-access-log", "--timeout-graceful-shutdown", "10"]
        if spec.workers > 1:
            argv += ["--workers", str(spec.workers)]
        return argv

    return build


def _daphne(spec: Spec) -> list[str]:
    argv = [sys.executable, "-m", "daphne", "--bind", HOST, "--port", str(spec.port), "-v", "1"]
    return [*argv, spec.app or ASGI_APP]


def _hypercorn(spec: Spec) -> list[str]:
    argv = [sys.executable, "-m", "hypercorn", spec.app or ASGI_APP, "--bind", spec.bind]
    return [*argv, "--workers", str(spec.workers), "--graceful-timeout", "10"]


def _waitress(spec: Spec) -> list[str]:
    argv = [sys.executable, "-m", "waitress", f"--listen={spec.bind}", f"--threads={spec.threads}"]
    return [*argv, spec.app or WSGI_APP]


def _runserver(spec: Spec) -> list[str]:
    return [sys.executable, "-m", "django", "runserver", spec.bind, "--noreload", "--skip-checks"]


def _granian(interface: str, default_app: str) -> Callable[[Spec], list[str]]:
    def build(spec: Spec) -> list[str]:
        argv = [sys.executable, "-m", "granian", "--interface", interface, "--host", HOST]
        argv += ["--port", str(spec.port), "--workers", str(spec.workers), "--no-ws"]
        return [*argv, "--workers-kill-timeout", "10", spec.app or default_app]

    return build


def _uwsgi(proto: str, *, threaded: bool = False) -> Callable[[Spec], list[str]]:
    def build(spec: Spec) -> list[str]:
        argv = uwsgi_command(spec.bind, spec.app or WSGI_APP, workers=spec.workers, proto=proto)
        if threaded:
            argv += ["--threads", str(spec.threads)]
        return argv

    return build


#: kind -> the argv that starts it. A new kind is one builder here and its name in ``KINDS``
#: (and ``WSGI_KINDS`` or ``ASGI_KINDS``).
COMMANDS: dict[str, Callable[[Spec], list[str]]] = {
    "gunicorn-sync": _gunicorn("sync"),
    "gunicorn-gthread": _gunicorn("gthread"),
    "uvicorn": _uvicorn(ASGI_APP),
    "uvicorn-plain": _uvicorn(ASGI_PLAIN_APP),
    "daphne": _daphne,
    "hypercorn": _hypercorn,
    "waitress": _waitress,
    "runserver": _runserver,
    "granian-wsgi": _granian("wsgi", WSGI_APP),
    "granian-asgi": _granian("asgi", ASGI_APP),
    "uwsgi": _uwsgi("http"),
    "uwsgi-threads": _uwsgi("http", threaded=True),
    "gunicorn-gevent": _gunicorn("gevent"),
    "gunicorn-uvicorn": _gunicorn("uvicorn_worker.UvicornWorker", ASGI_APP),
    "uwsgi-socket": _uwsgi("uwsgi"),
}
#: Servers that take the application as their last argument: options go before it.
APP_LAST = frozenset({"daphne", "waitress", "granian-wsgi", "granian-asgi"})


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
    try:
        build = COMMANDS[kind]
    except KeyError:
        raise ValueError(f"unknown server kind {kind!r}; one of {', '.join(KINDS)}") from None
    argv = build(Spec(port, workers, threads, app))
    if kind in APP_LAST:
        return [*argv[:-1], *extra_args, argv[-1]]
    return [*argv, *extra_args]


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


def _status(port: int, path: str, timeout: float) -> int | None:
    """The status an HTTP request to ``path`` gets back (None: no status line)."""
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request.encode())
            head = sock.recv(16)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not head.startswith(b"HTTP/1.") or not parts[1].isdigit():
        return None
    return int(parts[1])


def parent_death_signal() -> Callable[[], None] | None:
    """A preexec function: the child gets SIGTERM if this process dies (Linux only).

    Only for processes started before any thread: ``preexec_fn`` runs between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


class Server(Started):
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
        settings: str = "tests.settings",
        multiprocess_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        ready_status: int | None = None,
        drop_env: Sequence[str] = ("PROMETHEUS_MULTIPROC_DIR",),
        die_with_parent: bool = False,
        log_name: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        """``settings``: the Django settings module (``env`` may still override it).
        ``multiprocess_dir``: prometheus_client's multiprocess directory (created).
        ``port``: listen there instead of on a free port (no retry when it is taken).
        ``ready_status``: the status ``ready_path`` must answer (None: any status).
        ``drop_env``: names (or prefixes) of this process's environment the server must not
        inherit. ``die_with_parent``: SIGTERM the server when this process dies (Linux).
        ``cwd``: the server's working directory (default: the repository).
        """
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
        self.port_attempts = 1 if port else port_attempts
        self.settings = settings
        self.multiprocess_dir = None if multiprocess_dir is None else Path(multiprocess_dir)
        self.fixed_port = port
        self.ready_status = ready_status
        self.drop_env = tuple(drop_env)
        self.die_with_parent = die_with_parent
        self.cwd = Path(cwd) if cwd else REPO_ROOT
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="sent-otel-"))
        self.log_path = self._log_dir / f"{log_name or kind}.log"
        self.port = port or 0
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

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The server's main process (None before start)."""
        return self._proc

    def environment(self) -> dict[str, str]:
        # PROMETHEUS_MULTIPROC_DIR is dropped by default: only when a test asks for it.
        env = {k: v for k, v in os.environ.items() if not k.startswith(self.drop_env)}
        pythonpath = [str(REPO_ROOT)]
        if env.get("PYTHONPATH"):
            pythonpath.append(env["PYTHONPATH"])
        env.update(
            PYTHONPATH=os.pathsep.join(pythonpath),
            DJANGO_SETTINGS_MODULE=self.settings,
            PYTHONUNBUFFERED="1",
        )
        if self.multiprocess_dir is not None:
            self.multiprocess_dir.mkdir(parents=True, exist_ok=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.multiprocess_dir)
        if self.record is not None:
            env["SENT_OTEL_TEST_RECORD"] = self.record
        env.update(self.extra_env)
        return env

    def arguments(self) -> list[str]:
        """The server's argv on ``self.port``."""
        extra = list(self.extra_args)
        own_config = bool({"-c", "--config"} & set(extra))
        gunicorn = self.kind.startswith("gunicorn")
        if self.multiprocess_dir is not None and gunicorn and not own_config:
            extra = ["--config", MULTIPROCESS_CONFIG, *extra]
        return command(
            self.kind,
            self.port,
            workers=self.workers,
            threads=self.threads,
            app=self.app,
            extra_args=extra,
        )

    def start(self, cancel: threading.Event | None = None) -> Server:
        """Start and wait until ready; a set ``cancel`` ends the wait (InterruptedError)."""
        if self._proc is not None:
            raise ServerError(f"{self.kind} already started")
        for attempt in range(1, self.port_attempts + 1):
            self.port = self.fixed_port or free_port()
            self.argv = self.arguments()
            with open(self.log_path, "ab") as log:
                header = f"\n=== attempt {attempt}: {' '.join(self.argv)}\n"
                log.write(header.encode())
                log.flush()
                self._proc = subprocess.Popen(
                    self.argv,
                    cwd=self.cwd,
                    env=self.environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=parent_death_signal() if self.die_with_parent else None,  # noqa: PLW1509
                )
            try:
                self._wait_ready(cancel)
                return self
            except InterruptedError:
                self._kill()
                raise
            except ServerError:
                died = self._proc.poll() is not None
                self._kill()
                in_use = any(s in self.log_text()[-4000:].lower() for s in _ADDR_IN_USE)
                if died and in_use and attempt < self.port_attempts:
                    continue
                raise
        raise ServerError(f"{self.kind}: no free port after {self.port_attempts} attempts")

    def _wait_ready(self, cancel: threading.Event | None = None) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout

        def ready() -> bool:
            if proc.poll() is not None:
                raise ServerError(
                    f"{self.kind} exited with code {proc.returncode} while starting\n"
                    f"{self.log_tail()}"
                )
            if cancel is not None and cancel.is_set():
                raise InterruptedError(f"stopped while waiting for {self.kind}")
            if not _port_open(self.port):
                return False
            if self.ready_path is None:
                return True
            timeout = min(5.0, max(1.0, deadline - time.monotonic()))
            status = _status(self.port, self.ready_path, timeout)
            return status is not None and self.ready_status in (None, status)

        try:
            wait_for(ready, self.start_timeout, what=f"{self.kind} on port {self.port}")
        except AssertionError:
            raise ServerError(
                f"{self.kind} did not accept connections on port {self.port} within "
                f"{self.start_timeout:.0f}s\n{self.log_tail()}"
            ) from None

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
