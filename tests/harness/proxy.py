"""nginx in front of a real application server, for delivery tests behind a reverse proxy.

``Proxied(kind)`` starts the application server (a :class:`~tests.harness.servers.Server`)
and then nginx with a generated configuration in a temporary prefix: loopback only, in the
foreground (``-g 'daemon off;'``), logs, pid and temporary files inside the prefix. It offers
what tests use of a ``Server`` (``port`` is nginx's, ``stop()``, ``log_text()``,
``log_tail()``)::

    with Proxied("nginx-gunicorn", record=path) as front:
        full_read(front.port, "/file/")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.harness.lifecycle import Started
from tests.harness.servers import HOST, Server, ServerError, _status, free_port
from tests.harness.waiting import wait_for
from tests.middleware import ENV_VAR as ACCEL_ENV


@dataclass(frozen=True)
class Topology:
    """One way of putting nginx in front of an application server."""

    backend: str  # a Server kind ("uwsgi-socket": uWSGI speaking the uwsgi protocol)
    buffering: bool = True
    accel_header: bool = False


#: Every topology this module can start, by kind.
TOPOLOGIES: dict[str, Topology] = {
    # nginx defaults: proxy_buffering on.
    "nginx-gunicorn": Topology("gunicorn-sync"),
    "nginx-unbuffered": Topology("gunicorn-sync", buffering=False),
    # Buffering on in nginx, turned off per response by the application's header.
    "nginx-accel": Topology("gunicorn-sync", accel_header=True),
    "nginx-uwsgi": Topology("uwsgi-socket"),
}


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
    )


def nginx_config(prefix: Path, port: int, upstream_port: int, topology: Topology) -> str:
    """The whole nginx.conf: one server on 127.0.0.1:port passing to 127.0.0.1:upstream_port.

    Upstream HTTP/1.1 with keep-alive disabled (``Connection: close`` is nginx's default for
    a plain ``proxy_pass``), as most deployments have it; the access log records the status
    nginx logged (499 when the client left) next to the upstream's.
    """
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must write the temp paths
    if topology.backend == "uwsgi-socket":
        location = (
            f"uwsgi_pass {HOST}:{upstream_port};\n"
            "            include /etc/nginx/uwsgi_params;\n"
            f"            uwsgi_buffering {'on' if topology.buffering else 'off'};\n"
        )
    else:
        location = (
            f"proxy_pass http://{HOST}:{upstream_port};\n"
            "            proxy_http_version 1.1;\n"
            "            proxy_set_header Host $http_host;\n"
            f"            proxy_buffering {'on' if topology.buffering else 'off'};\n"
        )
    temp = "\n".join(
        f"    {name}_temp_path {prefix / (name + '_temp')};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
error_log {prefix / "error.log"} info;
pid {prefix / "nginx.pid"};
events {{ worker_connections 512; }}
http {{
    log_format delivery '$request_id $http_x_test_id $status $body_bytes_sent '
                        'upstream=$upstream_status $request_time';
    access_log {prefix / "access.log"} delivery;
{temp}
    server {{
        listen {HOST}:{port};
        location / {{
            {location.rstrip()}
        }}
    }}
}}
"""


class Proxied(Started):
    """nginx in front of a started application server (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        *,
        record: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike[str],
        workers: int = 1,
        start_timeout: float = 30.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.kind = kind
        self.topology = TOPOLOGIES[kind]
        self.prefix = Path(log_dir) / "nginx"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        env = dict(env or {})
        if self.topology.accel_header:
            env[ACCEL_ENV] = "no"
        backend = self.topology.backend
        self.backend = Server(
            backend,
            record=record,
            env=env,
            log_dir=log_dir,
            workers=workers,
            # uwsgi-socket speaks the uwsgi protocol: only its port can be probed.
            ready_path=None if backend == "uwsgi-socket" else "/metrics",
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.upstream_port = 0
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.prefix / "error.log"

    def start(self) -> Proxied:
        binary = nginx_binary()
        if binary is None:
            raise ServerError("nginx is not installed")
        self.backend.start()
        self.upstream_port = self.backend.port
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / f"{name}_temp").mkdir(parents=True, exist_ok=True)
        for attempt in range(5):
            self.port = free_port()
            conf = self.prefix / "nginx.conf"
            conf.write_text(nginx_config(self.prefix, self.port, self.upstream_port, self.topology))
            with open(self.prefix / "stderr.log", "ab") as log:
                self._proc = subprocess.Popen(
                    [binary, "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_ready():
                return self
            self._kill()
            if "Address already in use" not in self.log_text() or attempt == 4:
                self.stop()
                raise ServerError(f"nginx did not start\n{self.log_tail()}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_ready(self) -> bool:
        """Whether nginx answers within ``start_timeout`` (False: it exited or never did)."""
        proc = self._proc
        assert proc is not None

        def settled() -> str | None:
            if proc.poll() is not None:
                return "exited"
            return "ready" if _status(self.port, "/metrics", 5.0) is not None else None

        try:
            return wait_for(settled, self.start_timeout, what="nginx to answer") == "ready"
        except AssertionError:
            return False

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=self.stop_timeout)

    def stop(self) -> int | None:
        """Stop nginx (SIGQUIT: graceful, bounded), then the application server."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGQUIT)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        return self.backend.stop()

    def access_log(self) -> str:
        try:
            return (self.prefix / "access.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        """The application server's log (where the plugin logs), then nginx's error log."""
        try:
            nginx = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            nginx = ""
        return self.backend.log_text() + "\n" + nginx

    def log_tail(self, lines: int = 40) -> str:
        return self.backend.log_tail(lines) + "\n--- nginx ---\n" + self.access_log()[-3000:]
