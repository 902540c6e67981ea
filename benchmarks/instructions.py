"""Instructions per request under callgrind: ``python -m benchmarks.instructions``.

Wall-clock microseconds on a shared two-core machine move by 10-30 % between runs; instruction
counts do not. Each configuration runs the in-process WSGI loop of :mod:`benchmarks.inproc`
under ``valgrind --tool=callgrind`` twice, with ``--small`` and ``--large`` requests after the
same warm-up; the difference of the two totals divided by the difference of the counts is the
cost of one request, free of start-up. The WSGI count is the main thread's, the one that
serves the requests: the SDK's batch processor exports from a thread of its own, and how the two
threads take turns under callgrind moved the total by up to 6k per request between runs of
the same code. That thread's work (about 4.5k per span) is printed next to each row. The
cyclic collector is off while the requests are counted (see ``_loop``).

The ASGI rows count every thread. Django's ASGI handler runs the view and a disconnect
listener as tasks, and hands ``response.close()`` and the request signals' receivers to a
thread that asgiref starts for each request (``ThreadSensitiveContext``) and joins from
another thread when the request ends: 0.36M instructions of a 2.9M request (bare Django, a
100-chunk stream) run outside the main thread. Counting the main thread alone, two pairs of
runs of bare ``/astream/100/`` gave 2530.2k and 2522.1k per request, and full runs moved by
up to 30k. Two causes, measured on that row (pairs of 100 and 500 requests, two pairs):

- The GIL's switch interval. A thread waiting for the GIL asks the holder to drop it after
  5 ms of wall-clock time; under callgrind, many times slower, that happens within the
  thread hops, and the more often the busier the machine. The ASGI children set the interval
  to 1000 s: the GIL changes hands only where a thread waits, in the order the code gives
  (with one thread for a whole run, see below: 2500.5k and 2504.6k per request with 5 ms,
  2500.3k and 2500.9k without).
- Interpreter teardown: one run's cost 5.2M instructions more than its twin's (13k per
  request of a streaming row), with threads still ending. The children leave by
  ``os._exit`` once the requests are served (callgrind writes its counts however a process
  exits), for WSGI too.

With both, every thread counted: 2909.7k and 2908.6k (2909.3k and 2909.0k across the
pairs); the main thread alone, 2552.2k and 2552.7k. Keeping the handler's work on one thread
for a whole run (an outer ``ThreadSensitiveContext``) repeats no closer, so the handler
runs as Django ships it, a thread per request. The two were enough: the warm-up (the same in
both runs of a pair), specialisation and callgrind's scheduler (``--fair-sched``) were left
as they were. Even in one thread (``sync_to_async`` run inline), two pairs differed by 0.9k
per request (4.0k across them): type-lookup caches and context-variable maps follow object
addresses, which is about how exact a row can be. And a module changed since its last
import is compiled by the first run that imports it, counting the compiler in one run of a
pair: bytecode is written for ``benchmarks/`` and ``src/`` before anything is counted.

The streaming section measures WSGI and ASGI streams of 1 and 100 small chunks and a trivial
ASGI view, for bare Django, pass-through floors and the plugin (metrics only), in the same
run: the cost of one chunk is the difference of the two streams divided by 99, the cost of a
request the 1-chunk stream's. The plugin's targets over bare Django are in
:data:`benchmarks.targets.STREAM_TARGETS`; under them, the cost per chunk of
``asgi-floor-count``, a plain send function that only counts the bytes of body messages
with more to come: the least an exact byte count costs, so whether the ASGI per-chunk target
is reachable at all.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import configs
from benchmarks.targets import STREAM_TARGETS

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

#: The streaming section: configurations (bare, floor, plugin) per interface, and the paths.
STREAM_CONFIGS = (
    "bare",
    "floor-stream",
    "plugin-metrics",
    "asgi-bare",
    "asgi-floor-send",
    "asgi-floor-count",
    "asgi-plugin-metrics",
)
STREAM_CHUNKS = (1, 100)
#: The line under the targets: the ASGI counting floor's cost per chunk over bare Django.
COUNT_FLOOR = "the least an exact byte count costs"
#: The trivial async view, under ASGI.
ASGI_TRIVIAL = "/async/"
#: Fewer requests for the streaming runs: a 100-chunk request costs a few hundred thousand
#: instructions, and two counts that far apart are as exact.
STREAM_SCALE = 5


def stream_paths(asgi: bool) -> tuple[str, ...]:
    prefix = "/astream" if asgi else "/stream"
    paths = tuple(f"{prefix}/{n}/" for n in STREAM_CHUNKS)
    return (*paths, ASGI_TRIVIAL) if asgi else paths


def _loop(n: int, warmup: int, path: str) -> None:
    """Runs in the measured process: build the application, warm up, serve ``n`` requests."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    from benchmarks import app, inproc

    connection = peer = None
    if configs.get(os.environ[configs.ENV_VAR]).settings.get("SENT_OTEL_WATCH_DISCONNECTS"):
        import socket

        # A connected socket the watcher can register, its peer kept open (a client waiting).
        connection, peer = socket.socketpair()
    if app.config().asgi:
        # The GIL changes hands where a thread waits (the event loop in select(), a thread
        # starting, joining or on its queue), never because 5 ms ran out: how often they ran
        # out under callgrind depended on the load of the machine (see the docstring).
        sys.setswitchinterval(1000.0)
        run = inproc.asgi_runner(app.asgi_application(), path)
    else:
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
    # No interpreter teardown: it costs the same whatever ``n`` (no configuration leaves
    # cycles behind), yet its collections and module clean-up moved one run of a pair by up
    # to 5M instructions (13k per request in a streaming row) with the threads that were
    # still ending. Callgrind writes its counts when the process exits, however it exits.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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


def _compile() -> None:
    """Writes the bytecode of the project's modules before anything is counted: a module
    changed since its last import is otherwise compiled by the first run that imports it,
    which then counts the compiler in one run of a pair (millions of instructions)."""
    import compileall

    for folder in ("benchmarks", "src"):
        compileall.compile_dir(ROOT / folder, quiet=1)


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


def _per_request(
    valgrind: str, name: str, path: str, small: int, large: int, warmup: int, jobs: int
) -> float:
    """One request's instructions: the serving thread's (WSGI), every thread's (ASGI).
    ``jobs``: 2 runs the two callgrind runs side by side (the counts do not depend on it)."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        small_run = pool.submit(_instructions, valgrind, name, small, warmup, path)
        large_run = pool.submit(_instructions, valgrind, name, large, warmup, path)
        (small_count, small_others), (large_count, large_others) = (
            small_run.result(),
            large_run.result(),
        )
    value = (large_count - small_count) / (large - small)
    others = (large_others - small_others) / (large - small)
    if configs.get(name).asgi:
        # Django's sync_to_async work (response.close(), the request signals) runs on a
        # thread of its own, started and joined for each request: part of it, counted.
        value += others
        counted = "counted"
    else:
        counted = "not counted"
    print(
        f"{name} {path}: {value / 1000:.1f}k instructions/request "
        f"(other threads: {others / 1000:.1f}k, {counted})",
        flush=True,
    )
    return value


def _streams(
    valgrind: str, names: list[str], small: int, large: int, warmup: int, jobs: int
) -> None:
    """The streaming section: per request, per chunk, over bare Django, and the targets."""
    measured: dict[tuple[str, str], float] = {}
    for name in names:
        cfg = configs.get(name)
        for path in stream_paths(cfg.asgi):
            measured[name, path] = _per_request(valgrind, name, path, small, large, warmup, jobs)
    first, last = STREAM_CHUNKS[0], STREAM_CHUNKS[-1]
    print()
    print(
        f"Streaming, measured with `python -m benchmarks.instructions` ({large} - {small} "
        f"requests of each path; per chunk: ({last}-chunk - {first}-chunk) / {last - first})"
    )
    print()
    print(
        "| configuration | 1-chunk stream, k/request | per chunk, k | trivial view, k/request "
        "| over bare: per request, k | per chunk, k | trivial view, k |"
    )
    print("|---|---|---|---|---|---|---|")
    rows: dict[str, tuple[float, float, float | None]] = {}
    for name in names:
        cfg = configs.get(name)
        one, many, *trivial = (measured[name, p] for p in stream_paths(cfg.asgi))
        rows[name] = (one, (many - one) / (last - first), trivial[0] if trivial else None)
    results: list[tuple[str, float, float]] = []
    for name, (one, chunk, trivial) in rows.items():
        cfg = configs.get(name)
        base = rows.get("asgi-bare" if cfg.asgi else "bare")
        cells = [f"{one / 1000:.1f}", f"{chunk / 1000:.2f}", _k(trivial), "", "", ""]
        if base is not None and name not in ("bare", "asgi-bare"):
            cells[3] = f"{(one - base[0]) / 1000:+.1f}"
            cells[4] = f"{(chunk - base[1]) / 1000:+.2f}"
            if trivial is not None and base[2] is not None:
                cells[5] = f"{(trivial - base[2]) / 1000:+.1f}"
            if cfg.plugin:
                kind = "asgi" if cfg.asgi else "wsgi"
                results.append(
                    (f"{kind} per chunk", chunk - base[1], STREAM_TARGETS[f"{kind} per chunk"])
                )
                if cfg.asgi:
                    limit = STREAM_TARGETS["asgi per request"]
                    results.append(("asgi per request", one - base[0], limit))
                    if trivial is not None and base[2] is not None:
                        results.append(("asgi per request, trivial view", trivial - base[2], limit))
        print(f"| {cfg.label} | " + " | ".join(cells) + " |")
    if results:
        print()
        for what, value, limit in results:
            verdict = "ok" if value <= limit else "MISSED"
            print(f"target {what}: {value / 1000:+.2f}k <= {limit / 1000:.1f}k: {verdict}")
    count, bare = rows.get("asgi-floor-count"), rows.get("asgi-bare")
    if count is not None and bare is not None:
        # Whether the per-chunk target is reachable at all: a send wrapper that only counts.
        value = (count[1] - bare[1]) / 1000
        print(f"{COUNT_FLOOR}: {value:+.2f}k per chunk (asgi-floor-count over asgi-bare)")


def _k(value: float | None) -> str:
    return "" if value is None else f"{value / 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="*", default=list(DEFAULT_CONFIGS))
    parser.add_argument(
        "--routed-configs",
        nargs="*",
        default=list(ROUTED_CONFIGS),
        help=f"configurations measured again on {ROUTED_PATH} (none: skip)",
    )
    parser.add_argument(
        "--stream-configs",
        nargs="*",
        default=list(STREAM_CONFIGS),
        help="configurations of the streaming section (none: skip)",
    )
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=2500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: the two runs of each row side by side (faster on an idle machine)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=PATH, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _loop(args.child, args.warmup, args.path)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is needed (Debian package valgrind)")
    _compile()
    tables: list[tuple[str, dict[str, float]]] = []
    for path, names in ((PATH, args.configs), (ROUTED_PATH, args.routed_configs)):
        per_request: dict[str, float] = {}
        for name in names:
            cfg = configs.get(name)
            if cfg.missing():
                print(f"{name}: skipped, missing {', '.join(cfg.missing())}")
                continue
            per_request[name] = _per_request(
                valgrind, name, path, args.small, args.large, args.warmup, args.jobs
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
    if args.stream_configs:
        small = max(args.small // STREAM_SCALE, 1)
        large = max(args.large // STREAM_SCALE, small + 1)
        _streams(valgrind, args.stream_configs, small, large, args.warmup, args.jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
