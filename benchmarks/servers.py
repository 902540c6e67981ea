"""Real servers for the benchmarks: gunicorn (sync, 1 worker) and uvicorn, driven by ``wrk``.

Each server runs the benchmark project (``benchmarks.wsgi`` / ``benchmarks.asgi``) for one
configuration, on a free port of 127.0.0.1, with its output in a log file. Readiness is
awaited by polling the port with a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchmarks import configs

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_env(config: str, **extra: str) -> dict[str, str]:
    """The environment of a benchmark subprocess: no stray OTEL_* or Django settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "PROMETHEUS_MULTIPROC", "SENT_OTEL_"))
        and k != "DJANGO_SETTINGS_MODULE"
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
            configs.ENV_VAR: config,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(extra)
    return env


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """A minimal HTTP/1.0 GET over a raw socket: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


def download(port: int, path: str, timeout: float = 30.0) -> tuple[int, int]:
    """A full HTTP/1.0 GET that counts the body without keeping it: (status, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        head = b""
        body = 0
        in_body = False
        while True:
            n = sock.recv_into(view)
            if not n:
                break
            if in_body:
                body += n
                continue
            head += bytes(view[:n])
            if b"\r\n\r\n" in head:
                head, _, rest = head.partition(b"\r\n\r\n")
                body = len(rest)
                in_body = True
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


@dataclass
class Server:
    kind: str  # "gunicorn" or "uvicorn"
    config: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, path: str = "/", timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | str = "not started"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} ({self.config}) exited with {self.process.returncode}:\n"
                    f"{self.log_tail()}"
                )
            try:
                status, _ = http_get(self.port, path, timeout=2)
                if status == 200:
                    return
                last = f"status {status}"
            except OSError as exc:
                last = exc
            time.sleep(0.05)  # poll interval, bounded by the deadline
        raise RuntimeError(f"{self.kind} ({self.config}) not ready: {last}\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


def start(kind: str, config: str, log_dir: Path, **env: str) -> Server:
    port = free_port()
    if kind == "gunicorn":
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "benchmarks.wsgi:application",
            "--worker-class",
            "sync",
            "--workers",
            "1",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ]
    elif kind == "uvicorn":
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--lifespan",
            "off",
        ]
    else:
        raise ValueError(kind)
    log_path = log_dir / f"{kind}-{config}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by Server.stop()
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=bench_env(config, **env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Server(kind, config, port, process, log_path, log)


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
    text = server.log_tail(lines=10_000)
    return [
        line
        for line in text.splitlines()
        if "django_sent_otel" in line or "django-sent-otel" in line or "Traceback" in line
    ]


def describe(**kwargs: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())
