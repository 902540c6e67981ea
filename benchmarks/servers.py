"""Real servers for the benchmarks: gunicorn (sync, 1 worker) and uvicorn, driven by ``wrk``.

Each server runs the benchmark project (``benchmarks.wsgi`` / ``benchmarks.asgi``) for one
configuration through the tests' server harness (:class:`tests.harness.servers.Server`: a free
port of 127.0.0.1, its own process group, a log file, readiness awaited with a deadline).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import configs, runner
from tests.harness.clients import full_read
from tests.harness.servers import Server

#: Benchmark server -> (harness kind, application, path that must answer 200 when ready).
KINDS = {
    "gunicorn": ("gunicorn-sync", "benchmarks.wsgi:application", "/"),
    "uvicorn": ("uvicorn", "benchmarks.asgi:application", "/async/"),
}
START_TIMEOUT = 30.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def start(kind: str, config: str, log_dir: Path, **env: str) -> Server:
    """Start the benchmark project for ``config`` under ``kind`` (1 worker) and wait for it."""
    harness_kind, app, ready_path = KINDS[kind]
    server = Server(
        harness_kind,
        app=app,
        workers=1,
        extra_args=["--log-level", "warning"],
        settings=runner.SETTINGS,
        drop_env=runner.FOREIGN_ENV,
        env={configs.ENV_VAR: config, "PYTHONDONTWRITEBYTECODE": "1", **env},
        log_dir=log_dir,
        log_name=f"{kind}-{config}",
        ready_path=ready_path,
        ready_status=200,
        start_timeout=START_TIMEOUT,
    )
    return server.start()


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One full GET: (status, body)."""
    response = full_read(port, path, timeout=timeout, keep_body=True)
    return response.status, response.body or b""


def download(port: int, path: str, timeout: float = 30.0) -> tuple[int, int]:
    """One full GET that counts the body without keeping it: (status, body bytes)."""
    response = full_read(port, path, timeout=timeout)
    return response.status, response.body_len


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    requests: int
    errors: int
    non_2xx: int


_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_TOTAL = re.compile(r"(\d+) requests in")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(output: str) -> WrkResult:
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    if rps is None or total is None:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    non_2xx = _NON_2XX.search(output)
    sock = _SOCKET.search(output)
    # gunicorn's sync worker closes every connection: "read" errors are those closes.
    errors = 0 if sock is None else int(sock.group(1)) + int(sock.group(3)) + int(sock.group(4))
    return WrkResult(
        float(rps.group(1)),
        int(total.group(1)),
        errors,
        0 if non_2xx is None else int(non_2xx.group(1)),
    )


def run_wrk(
    url: str, *, threads: int = 1, connections: int = 8, duration: float = 5.0
) -> WrkResult:
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    seconds = max(1, round(duration))
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return parse_wrk(done.stdout)


def log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="sent-otel-bench-"))


def server_errors(server: Server) -> list[str]:
    """Lines of a server log that mention our package in a traceback or an error."""
    text = server.log_text()
    return [
        line
        for line in text.splitlines()
        if "django_sent_otel" in line or "django-sent-otel" in line or "Traceback" in line
    ]


def describe(**kwargs: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())
