"""Settings of the load tests: the test project plus an untracked ``/drain/`` path.

wrk cannot stop gracefully: requests still in flight when its duration ends are cut, and a
server may or may not log them. The load script switches to ``/drain/`` shortly before the
end, so only untracked requests (excluded here, ignored when counting the access log) are
ever cut.
"""

from __future__ import annotations

from tests.settings import *  # noqa: F403

SENT_OTEL_EXCLUDED_PATHS = [r"^/metrics$", r"^/drain/"]
