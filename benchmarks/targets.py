"""What the project promises for each benchmark row: baselines and targets, in one place."""

from __future__ import annotations

from typing import Final

#: In-process rows: the configuration each is compared with.
INPROC_BASELINE: Final = {
    "plugin-metrics": "bare",
    "plugin-noop": "bare",
    "plugin-sdk": "bare",
    "django-prometheus": "bare",
    "otel-django": "bare",
    "otel-django-plugin": "otel-django",
    "floor-metrics": "bare",
    "floor-span": "bare",
    "asgi-plugin-metrics": "asgi-bare",
    "asgi-plugin-sdk": "asgi-bare",
}
#: In-process targets: the largest delta to the baseline, in microseconds per request.
INPROC_TARGET_US: Final = {
    "plugin-metrics": 4.0,
    "plugin-noop": 4.0,
    "plugin-sdk": 15.0,
    "otel-django-plugin": 15.0,
}
#: Configurations whose gen-2 collections must equal their baseline's (and leave no cycles).
GC_SAME_AS_BASELINE: Final = ("plugin-metrics", "plugin-noop", "asgi-plugin-metrics")
#: SDK configurations: spans wait in the BatchSpanProcessor queue, survive gen 0 and cause
#: gen-1/gen-2 collections in any SDK set-up; these must leave no cyclic garbage.
GC_NO_CYCLES: Final = ("plugin-sdk", "otel-django-plugin", "asgi-plugin-sdk")
#: Real servers: the lowest requests/s ratio to bare Django.
SERVER_TARGET: Final = {
    ("gunicorn", "plugin-metrics"): 0.97,
    ("gunicorn", "plugin-sdk"): 0.93,
    ("uvicorn", "asgi-plugin-metrics"): 0.97,
    ("uvicorn", "asgi-plugin-sdk"): 0.97,
}
#: Streaming rows of ``python -m benchmarks.instructions``, metrics only (time to first byte and
#: chunk counting are always on): the largest instructions over bare Django per chunk (WSGI,
#: ASGI) and per request (ASGI, a 1-chunk stream and a trivial view).
STREAM_TARGETS: Final = {
    "wsgi per chunk": 1_000,
    "asgi per chunk": 1_800,
    "asgi per request": 60_000,
}
#: FileResponse through gunicorn: the lowest throughput ratio to bare Django (and 0 reads).
FILE_TARGET: Final = 0.98
#: GET /metrics with 1000 series: the highest median render time.
METRICS_TARGET_MS: Final = 20.0
