"""Instructions per request under callgrind: ``python -m benchmarks.instructions``.

Wall-clock microseconds on a shared two-core machine move by 10-30 % between runs; instruction
counts do not. Each configuration runs the in-process WSGI loop of :mod:`benchmarks.inproc`
under ``valgrind --tool=callgrind`` twice, with ``--small`` and ``--large`` requests after the
same warm-up; the difference of the two totals divided by the difference of the counts is the
cost of one request, free of start-up. The count is the main thread's, the one that serves
the requests: the SDK's batch processor exports from a thread of its own, and how the two
threads take turns under callgrind moved the total by up to 6k per request between runs of
the same code. That thread's work (about 4.5k per span) is printed next to each row. The
cyclic collector is off while the requests are counted (see ``_loop``).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import configs

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = (
    "bare",
    "floor-metrics",
    "floor-aggregate",
    "plugin-metrics",
    "plugin-otel-metrics",
    "plugin-noop",
    "plugin-watch",
    "floor-span",
    "plugin-sdk",
    "django-prometheus",
    "otel-django",
    "otel-django-plugin",
)
BASELINE = {"otel-django-plugin": "otel-django", "plugin-otel-metrics": "plugin-metrics"}
_TOTALS = re.compile(r"^totals: (\d+)", re.MULTILINE)


#: The trivial view every configuration is measured on, and the same body behind a route
#: with a URL parameter, measured for the configurations that have targets.
PATH = "/"
ROUTED_PATH = "/item/42/"
ROUTED_CONFIGS = ("bare", "plugin-metrics", "plugin-sdk")


def _loop(n: int, warmup: int, path: str) -> None:
    """Runs in the measured process: build the application, warm up, serve ``n`` requests."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    from benchmarks import app, inproc

    connection = peer = None
    if configs.get(os.environ[configs.ENV_VAR]).settings.get("SENT_OTEL_WATCH_DISCONNECTS"):
        import socket

        # A connected socket the watcher can register, its peer kept open (a client waiting).
        connection, peer = socket.socketpair()
    run = inproc.wsgi_runner(app.wsgi_application(), path, connection)
    run(warmup)
    # The cyclic collector is off for the measured requests. Its work depends on how much is
    # alive when it runs, not on the code measured: spans waiting in the SDK's batch queue
    # (for as long as its thread takes to wake) moved the SDK rows by up to 20k per request
    # between runs. No configuration leaves cycles behind (``make bench`` counts collections).
    gc.collect()
    gc.disable()
    run(n)
    if peer is not None:
        peer.close()


def _instructions(valgrind: str, config: str, n: int, warmup: int, path: str) -> tuple[int, int]:
    """The instructions of the main thread, and of all the other threads, for one run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENT_OTEL_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env[configs.ENV_VAR] = config
    env["PYTHONPATH"] = str(ROOT)
    # String hashes are randomised per process: dict layouts, and so the counts, would move
    # by a few thousand instructions per request between runs of the same code.
    env["PYTHONHASHSEED"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                valgrind,
                "--tool=callgrind",
                "--separate-threads=yes",  # one file per thread: out-01 is the main thread
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                "-m",
                "benchmarks.instructions",
                "--child",
                str(n),
                "--warmup",
                str(warmup),
                "--path",
                path,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"callgrind run of {config} failed:\n{done.stderr[-3000:]}")
        totals = {out.name: _totals(out) for out in Path(tmp).glob("out-*")}
    main_thread = totals.pop("out-01", None)
    if main_thread is None:
        raise SystemExit(f"callgrind wrote no count for the main thread of {config}")
    return main_thread, sum(totals.values())


def _totals(out: Path) -> int:
    """The instruction total of one thread's callgrind file."""
    match = _TOTALS.search(out.read_text(errors="replace"))
    if match is None:
        raise SystemExit(f"no totals in {out.name}")
    return int(match.group(1))


def _table(per_request: dict[str, float]) -> None:
    print("| configuration | k instructions/request | delta vs | delta k instructions |")
    print("|---|---|---|---|")
    for name, value in per_request.items():
        base = BASELINE.get(name, "bare")
        delta = ""
        if name != base and base in per_request:
            delta = f"{(value - per_request[base]) / 1000:+.1f}"
        shown_base = base if delta else ""
        print(f"| {configs.get(name).label} | {value / 1000:.1f} | {shown_base} | {delta} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument(
        "--routed-configs",
        nargs="*",
        default=list(ROUTED_CONFIGS),
        help=f"configurations measured again on {ROUTED_PATH} (none: skip)",
    )
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=2500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=PATH, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _loop(args.child, args.warmup, args.path)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is needed (Debian package valgrind)")
    tables: list[tuple[str, dict[str, float]]] = []
    for path, names in ((PATH, args.configs), (ROUTED_PATH, args.routed_configs)):
        per_request: dict[str, float] = {}
        for name in names:
            cfg = configs.get(name)
            if cfg.missing():
                print(f"{name}: skipped, missing {', '.join(cfg.missing())}")
                continue
            small, small_others = _instructions(valgrind, name, args.small, args.warmup, path)
            large, large_others = _instructions(valgrind, name, args.large, args.warmup, path)
            count = args.large - args.small
            per_request[name] = (large - small) / count
            others = (large_others - small_others) / count
            print(
                f"{name} {path}: {per_request[name] / 1000:.1f}k instructions/request "
                f"(other threads: {others / 1000:.1f}k)",
                flush=True,
            )
        if per_request:
            tables.append((path, per_request))

    for path, per_request in tables:
        print()
        print(
            f"Measured with `python -m benchmarks.instructions` ({args.large} - {args.small} "
            f"requests of {path})"
        )
        print()
        _table(per_request)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
