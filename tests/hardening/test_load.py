"""Load: under ``wrk -t2 -c64`` nothing is lost and nothing is counted twice.

gunicorn (gthread, 2 workers, multiprocess metrics, access log to a file) and uvicorn
(``tests.asgi:application``, access log on) serve the test project while wrk sends a mix of
``small/``, ``articles/<n>/`` (a different ``n`` each time, one route label) and ``empty/``
(204) for ``SENT_OTEL_HARDENING_LOAD_SECONDS`` seconds (default 10). Afterwards, per route and
status, delivered + failed responses equal the requests the server logged in its own access
log, exactly: scraped from ``/metrics`` while the server runs, read from the ``response_delivered``
records after it stopped, and (gunicorn) from the multiprocess files after it stopped.

wrk cannot stop gracefully: requests in flight when its time is up are cut, and whether the
server logged those is a race. So the Lua script switches every connection to ``/drain/`` for the
last few seconds; ``/drain/`` is excluded from tracking (``settings_load``) and from the count,
so every tracked request has long finished when wrk stops.

Run: ``python -m pytest tests/hardening/test_load.py -q -s`` (prints the figures).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.hardening.support import start
from tests.harness.names import DELIVERED
from tests.harness.records import read_records
from tests.harness.scrape import Outcomes, multiprocess_scrape, scrape, total
from tests.harness.servers import Server
from tests.harness.tools import need_binary
from tests.harness.waiting import wait_for

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]

LOAD_SECONDS = int(os.environ.get("SENT_OTEL_HARDENING_LOAD_SECONDS", "10"))
DRAIN_SECONDS = 3
WRK = shutil.which("wrk") or ("/usr/bin/wrk" if os.access("/usr/bin/wrk", os.X_OK) else None)

LUA = """
-- Per wrk thread: tracked requests for LOAD_PHASE seconds, then only /drain/ (untracked).
local phase = tonumber(os.getenv("LOAD_PHASE"))
local start = 0
local n = 0
function init(args)
  start = os.time()
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100003)
end
function request()
  if os.time() - start >= phase then
    return wrk.format("GET", "/drain/")
  end
  n = n + 1
  local k = n % 10
  if k < 5 then
    return wrk.format("GET", "/small/")
  elseif k < 9 then
    return wrk.format("GET", "/articles/" .. math.random(1, 1000000) .. "/")
  end
  return wrk.format("GET", "/empty/")
end
"""

GUNICORN_ACCESS = re.compile(r"^(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3})$", re.M)
UVICORN_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.[01]" (?P<status>\d{3})')
UNTRACKED = frozenset({"/metrics", "/drain/"})
ARTICLE = re.compile(r"^/articles/\d+/$")


def route_of(path: str) -> str:
    if path in ("/small/", "/empty/"):
        return path[1:]
    if ARTICLE.match(path):
        return "articles/<int:year>/"
    raise AssertionError(f"the server logged a request nobody sent: {path!r}")


def logged(text: str, pattern: re.Pattern[str]) -> tuple[collections.Counter[tuple[str, str]], int]:
    """Tracked requests in an access log by (route, status), and all requests but /metrics."""
    tracked: collections.Counter[tuple[str, str]] = collections.Counter()
    every = 0
    for match in pattern.finditer(text):
        path = match["path"].split("?", 1)[0]
        if path != "/metrics":
            every += 1
        if path not in UNTRACKED:
            tracked[(route_of(path), match["status"])] += 1
    return tracked, every


def access_text(server: Server, access_log: Path) -> str:
    """gunicorn writes its access log to a file; uvicorn logs it with everything else."""
    return access_log.read_text() if access_log.exists() else server.log_text()


def by_request(counts: Outcomes) -> collections.Counter[tuple[str, str]]:
    """(route, status) -> delivered + failed."""
    merged: collections.Counter[tuple[str, str]] = collections.Counter()
    for (route, status, _), n in counts.items():
        merged[(route, status)] += n
    return merged


def run_wrk(url: str, workdir: Path) -> tuple[int, str]:
    assert WRK is not None
    script = workdir / "load.lua"
    script.write_text(LUA)
    seconds = LOAD_SECONDS + DRAIN_SECONDS
    argv = [WRK, "-t2", "-c64", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    result = subprocess.run(
        argv,
        env={**os.environ, "LOAD_PHASE": str(LOAD_SECONDS)},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    assert result.returncode == 0, f"wrk failed: {result.stdout}\n{result.stderr}"
    match = re.search(r"(\d+) requests in", result.stdout)
    assert match, result.stdout
    return int(match[1]), result.stdout


@pytest.mark.parametrize("kind", ["gunicorn-gthread", "uvicorn"])
def test_load_every_logged_request_counted_once(kind: str, tmp_path: Path) -> None:
    need_binary(WRK, "wrk")
    gunicorn = kind.startswith("gunicorn")
    access_log = tmp_path / "access.log"
    if gunicorn:
        args = ["--access-logfile", str(access_log), "--access-logformat", "%(m)s %(U)s %(s)s"]
    else:
        args = ["--access-log"]
    pattern = GUNICORN_ACCESS if gunicorn else UVICORN_ACCESS
    server = start(
        kind,
        tmp_path,
        settings="tests.hardening.settings_load",
        multiprocess_dir=gunicorn,
        extra_args=args,
    )
    try:
        wrk_count, wrk_output = run_wrk(server.url + "/", tmp_path)
        # The last tracked request ended seconds ago; give slow machines a deadline anyway.
        logged_now = sum(logged(access_text(server, access_log), pattern)[0].values())
        assert logged_now > 0, f"no tracked request in the access log\n{server.log_tail()}"
        wait_for(
            lambda: total(scrape(server.port).outcomes()) >= logged_now,
            30,
            what=f"{logged_now} outcomes in /metrics",
        )
        scraped = scrape(server.port).outcomes()
    finally:
        server.stop()
    # After a graceful stop every request the server handled is in its access log.
    access, every = logged(access_text(server, access_log), pattern)
    expected = sum(access.values())
    # Every response wrk read was logged by the server (plus the cut /drain/ ones).
    assert every >= wrk_count, (every, wrk_count, wrk_output)
    failures = total(scraped) - total(scraped, DELIVERED)
    print(
        f"\n[load] {kind}: wrk {wrk_count} responses "
        f"({wrk_count / (LOAD_SECONDS + DRAIN_SECONDS):.0f}/s incl. drain); access log "
        f"{expected} tracked requests; /metrics {total(scraped, 'delivered')} delivered + "
        f"{failures} failed"
    )
    assert by_request(scraped) == access, f"/metrics {scraped} != access log {access}"
    assert not any(route == "metrics" for route, _, _ in scraped)
    # No client aborted: every tracked response was delivered.
    assert failures == 0, scraped
    # After the stop: one response_delivered record per logged request, and the same totals in
    # the multiprocess files.
    records = [r for r in read_records(tmp_path / "records.jsonl") if r["kind"] == "signal"]
    recorded = collections.Counter((r["route"], str(r["status_code"])) for r in records)
    assert recorded == access, f"records {recorded} != access log {access}"
    if gunicorn:
        assert multiprocess_scrape(tmp_path / "prometheus").outcomes() == scraped
