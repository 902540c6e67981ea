"""Test-project middleware: ``X-Accel-Buffering: no`` on every response when asked.

With ``SENT_OTEL_TEST_ACCEL_BUFFERING=no`` in the environment (set by ``tests.harness.proxy``
for the ``nginx-accel`` topology), nginx relays each response unbuffered although its own
``proxy_buffering`` is on: the way an application turns buffering off per response.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase

ENV_VAR = "SENT_OTEL_TEST_ACCEL_BUFFERING"


def accel_buffering(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    value = os.environ.get(ENV_VAR)

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        if value:
            response.headers["X-Accel-Buffering"] = value
        return response

    return middleware
