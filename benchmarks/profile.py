"""Where the plugin's time goes: ``python -m benchmarks.profile [--config plugin-sdk]``.

Runs the in-process benchmark loop of one configuration under cProfile and prints, per
request, the functions of ``django_sent_otel`` (own time and cumulative time, in microseconds)
and the heaviest functions overall. cProfile inflates tiny functions (it adds a fixed cost per
call), so read the result for where time goes, and ``python -m benchmarks`` for how much.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats

from benchmarks import configs

PACKAGE_MARKER = os.sep + "django_sent_otel" + os.sep


def _row(own: float, cumulative: float, calls: float, where: str) -> str:
    return f"{own * 1e6:8.2f} {cumulative * 1e6:8.2f} {calls:9.1f}  {where}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="plugin-sdk", choices=sorted(configs.CONFIGS))
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    os.environ[configs.ENV_VAR] = args.config
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

    from benchmarks import app, inproc

    cfg = app.config()
    application = app.asgi_application() if cfg.asgi else app.wsgi_application()
    run = inproc.asgi_runner(application) if cfg.asgi else inproc.wsgi_runner(application)
    run(1_000)
    profiler = cProfile.Profile()
    profiler.enable()
    run(args.requests)
    profiler.disable()

    stats = pstats.Stats(profiler)
    n = args.requests
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((filename, line, name, calls, tottime, cumtime))
    ours = [r for r in rows if PACKAGE_MARKER in r[0]]
    print(f"{args.config}: {n} requests under cProfile; microseconds per request")
    print(f"{'own':>8} {'cumul':>8} {'calls/req':>9}  function")
    for filename, line, name, calls, tottime, cumtime in sorted(ours, key=lambda r: -r[4]):
        where = filename.split(PACKAGE_MARKER, 1)[1]
        print(_row(tottime / n, cumtime / n, calls / n, f"{where}:{line} {name}"))
    print()
    print(f"top {args.top} functions overall by own time:")
    for filename, line, name, calls, tottime, cumtime in sorted(rows, key=lambda r: -r[4])[
        : args.top
    ]:
        short = filename.rsplit("site-packages" + os.sep, 1)[-1]
        print(_row(tottime / n, cumtime / n, calls / n, f"{short}:{line} {name}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
