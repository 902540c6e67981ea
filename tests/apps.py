from __future__ import annotations

import os

from django.apps import AppConfig


class TestsConfig(AppConfig):
    name = "tests"
    label = "tests"
    verbose_name = "django-sent-otel test project"

    def ready(self) -> None:
        path = os.environ.get("SENT_OTEL_TEST_RECORD")
        if path:
            from tests.harness.records import connect

            connect(path)
