"""Django's own test suite, run twice: without django-sent-otel and with it switched on.

    python scripts/django_suite.py [--parallel 2] [--apps handlers asgi ...]

Takes the source distribution of the Django that this interpreter imports (downloaded once from
PyPI with ``pip download --no-binary :all:`` and kept, unpacked, in a cache directory), runs the
test apps that exercise request handling with ``scripts/django_suite_runner.py`` in ``bare``
and in ``plugin`` mode, prints tests run, failures and errors of each run and the failing test
ids that only the plugin run has. Exits 1 when the plugin run has a failure the bare run has
not, or when the plugin saw no response at all (the comparison would prove nothing); exits 2
when a run did not report a result.

The cache is ``$SENT_OTEL_CACHE_DIR/django-suite`` (default ``~/.cache/django-sent-otel``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNNER = REPO_ROOT / "scripts" / "django_suite_runner.py"

#: Django's test apps that exercise request handling, middleware, responses and servers.
#: (FileResponse's tests live in ``responses``; ``staticfiles_tests`` serves files too.)
APPS = (
    "handlers",
    "requests_tests",
    "responses",
    "middleware",
    "middleware_exceptions",
    "asgi",
    "view_tests",
    "test_client",
    "test_client_regress",
    "servers",
    "wsgi",
    "builtin_server",
    "httpwrappers",
    "csrf_tests",
    "conditional_processing",
    "sessions_tests",
    "staticfiles_tests",
    "logging_tests",
)

#: Bound on one run (seconds); each takes well under a minute on two busy cores.
RUN_TIMEOUT = 600

_FAILED_TEST = re.compile(r"^(?:ERROR|FAIL|UNEXPECTED SUCCESS): (.+?)\s*$", re.MULTILINE)
_RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)
_STATUS = re.compile(r"^(OK|FAILED)(?: \((.*)\))?\s*$", re.MULTILINE)


@dataclass
class RunResult:
    """What one ``runtests.py`` run reported."""

    mode: str
    ran: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    wall: float = 0.0
    returncode: int = 0
    deliveries: int = 0

    @property
    def complete(self) -> bool:
        return self.ran is not None

    @property
    def failures(self) -> int:
        return self.counts.get("failures", 0)

    @property
    def errors(self) -> int:
        return self.counts.get("errors", 0)

    def summary(self) -> str:
        if not self.complete:
            return f"{self.mode}: no result (exit code {self.returncode})"
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        return (
            f"{self.mode}: {self.ran} tests, {self.failures} failures, {self.errors} errors"
            f" ({extra or 'OK'}) in {self.wall:.1f}s"
        )


def parse_output(mode: str, output: str) -> RunResult:
    """Read unittest's closing report: tests run, the status counts and the failing test ids."""
    result = RunResult(mode)
    ran = _RAN.findall(output)
    if ran:
        result.ran = int(ran[-1])
    status = _STATUS.findall(output)
    if status:
        for part in (status[-1][1] or "").split(","):
            name, _, value = part.strip().partition("=")
            if value.isdigit():
                result.counts[name] = int(value)
    result.failing = set(_FAILED_TEST.findall(output))
    return result


def new_failures(bare: RunResult, plugin: RunResult) -> set[str]:
    """Failing test ids of the plugin run that the bare run does not have."""
    return plugin.failing - bare.failing


def cache_dir() -> Path:
    base = os.environ.get("SENT_OTEL_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "django-sent-otel"
    )
    return Path(base) / "django-suite"


def django_tests_dir(version: str, cache: Path) -> Path:
    """The ``tests/`` directory of Django ``version``'s sources, downloaded once."""
    target = cache / f"django-{version}"
    if (target / "tests" / "runtests.py").is_file():
        return target / "tests"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [
                sys.executable,
                *("-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps"),
                *("--dest", tmp, f"django=={version}"),
            ],
            check=True,
        )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[1:2] == ["tests"]]
            tar.extractall(unpacked, members=members, filter="data")
        (top,) = unpacked.iterdir()
        shutil.rmtree(target, ignore_errors=True)
        top.rename(target)
    return target / "tests"


def run(mode: str, tests_dir: Path, apps: Sequence[str], parallel: int, logs: Path) -> RunResult:
    log = logs / f"{mode}.log"
    record = logs / f"{mode}-deliveries.jsonl"
    record.unlink(missing_ok=True)
    env = dict(os.environ, SENT_OTEL_TEST_RECORD=str(record), PYTHONDONTWRITEBYTECODE="1")
    argv = [sys.executable, str(RUNNER), mode, "--noinput", "--parallel", str(parallel), *apps]
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.run(
            argv,
            cwd=tests_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=RUN_TIMEOUT,
        )
    wall = time.monotonic() - started
    result = parse_output(mode, log.read_text(errors="replace"))
    result.wall = wall
    result.returncode = proc.returncode
    if record.exists():
        result.deliveries = sum(1 for line in record.read_bytes().splitlines() if line.strip())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parallel", type=int, default=2, help="test processes (default 2)")
    parser.add_argument("--apps", nargs="+", default=list(APPS), help="Django test apps to run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    options = parser.parse_args(argv)

    import django

    version = django.__version__
    started = time.monotonic()
    tests_dir = django_tests_dir(version, cache_dir())
    logs = Path(tempfile.mkdtemp(prefix="django-suite-"))
    print(f"Django {version} ({tests_dir}), Python {sys.version.split()[0]}", flush=True)
    print(f"apps: {' '.join(options.apps)}", flush=True)
    bare = run("bare", tests_dir, options.apps, options.parallel, logs)
    print(bare.summary(), flush=True)
    plugin = run("plugin", tests_dir, options.apps, options.parallel, logs)
    print(f"{plugin.summary()}; the plugin saw {plugin.deliveries} responses", flush=True)
    added = sorted(new_failures(bare, plugin))
    gone = sorted(bare.failing - plugin.failing)
    print(f"failing only with the plugin: {len(added)}")
    for test_id in added:
        print(f"  {test_id}")
    if gone:
        print(f"failing only without the plugin: {len(gone)}: {', '.join(gone)}")
    total = time.monotonic() - started
    print(f"wall time: {total:.1f}s (logs in {logs})")
    if options.json:
        options.json.write_text(
            json.dumps(
                {
                    "django": version,
                    "apps": options.apps,
                    "runs": {
                        r.mode: {
                            "ran": r.ran,
                            "counts": r.counts,
                            "failing": sorted(r.failing),
                            "wall": round(r.wall, 1),
                            "deliveries": r.deliveries,
                        }
                        for r in (bare, plugin)
                    },
                    "failing_only_with_plugin": added,
                },
                indent=1,
            )
        )
    if not bare.complete or not plugin.complete:
        print(f"a run reported no result: see {logs}", file=sys.stderr)
        return 2
    if added:
        print(f"the plugin breaks {len(added)} of Django's tests: see {logs}", file=sys.stderr)
        return 1
    if plugin.deliveries == 0:
        print("the plugin run tracked no response: the plugin was not on", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
