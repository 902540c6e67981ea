"""The opentelemetry-instrument entry point places the middleware right after Django's own."""

from __future__ import annotations

from importlib.metadata import entry_points

from django.conf import settings
from django.test import override_settings

from django_sent_otel.checks import MIDDLEWARE_PATH, OTEL_MIDDLEWARE
from django_sent_otel.instrumentation import DeliveryInstrumentor


def test_entry_point_is_registered() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="opentelemetry_instrumentor")}
    assert found["django_sent_otel"] == "django_sent_otel.instrumentation:DeliveryInstrumentor"


def _instrumented(middleware: list[str]) -> list[str]:
    with override_settings(MIDDLEWARE=middleware):
        instrumentor = DeliveryInstrumentor()
        instrumentor._instrument()
        result = list(settings.MIDDLEWARE)
        instrumentor._uninstrument()
        assert MIDDLEWARE_PATH not in settings.MIDDLEWARE
    return result


def test_inserted_first_without_django_instrumentation() -> None:
    other = "django.middleware.common.CommonMiddleware"
    assert _instrumented([other]) == [MIDDLEWARE_PATH, other]


def test_inserted_after_django_instrumentation() -> None:
    other = "django.middleware.common.CommonMiddleware"
    assert _instrumented([OTEL_MIDDLEWARE, other]) == [OTEL_MIDDLEWARE, MIDDLEWARE_PATH, other]


def test_not_inserted_twice() -> None:
    assert _instrumented([MIDDLEWARE_PATH]) == [MIDDLEWARE_PATH]


def test_django_instrumentation_after_ours_keeps_the_order() -> None:
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    with override_settings(MIDDLEWARE=["django.middleware.common.CommonMiddleware"]):
        ours = DeliveryInstrumentor()
        ours._instrument()
        django_instrumentor = DjangoInstrumentor()
        django_instrumentor._instrument()
        try:
            assert list(settings.MIDDLEWARE)[:2] == [OTEL_MIDDLEWARE, MIDDLEWARE_PATH]
        finally:
            django_instrumentor._uninstrument()
            ours._uninstrument()
