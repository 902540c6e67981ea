"""System checks: exact ids for every bad setting, and the checks are registered."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client, override_settings

from django_sent_otel.checks import IDS, SETTING_IDS, check_middleware, check_settings
from django_sent_otel.conf import SETTINGS
from tests.harness.docs import page


def ids(**settings: Any) -> list[str]:
    with override_settings(**settings):
        return [m.id or "" for m in check_settings()]


def test_defaults_are_valid() -> None:
    assert check_settings() == []
    assert check_middleware() == []


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"SENT_OTEL_ENABLED": "yes"}, ["E001"]),
        ({"SENT_OTEL_METRICS_ENABLED": "false"}, ["E001"]),
        ({"SENT_OTEL_TRACING_ENABLED": 1}, ["E001"]),
        ({"SENT_OTEL_OTEL_METRICS_ENABLED": "on"}, ["E001"]),
        ({"SENT_OTEL_EXCLUDED_PATHS": "^/health$"}, ["E002"]),
        ({"SENT_OTEL_EXCLUDED_PATHS": ["^/ok$", 3]}, ["E002"]),
        ({"SENT_OTEL_EXCLUDED_PATHS": ["(unclosed"]}, ["E003"]),
        ({"SENT_OTEL_METRICS_NAMESPACE": "my-app"}, ["E004"]),
        ({"SENT_OTEL_METRICS_NAMESPACE": 7}, ["E004"]),
        ({"SENT_OTEL_METRICS_BUCKETS": []}, ["E005"]),
        ({"SENT_OTEL_METRICS_BUCKETS": [1, 0.5]}, ["E005"]),
        ({"SENT_OTEL_METRICS_BUCKETS": [0.1, "1"]}, ["E005"]),
        ({"SENT_OTEL_METRICS_REGISTRY": "no.such.module.registry"}, ["E006"]),
        ({"SENT_OTEL_METRICS_REGISTRY": "tests.slots.tracer_provider"}, ["E006"]),
        ({"SENT_OTEL_METRICS_TOKEN": "short"}, ["E007"]),
        ({"SENT_OTEL_METRICS_TOKEN": "has spaces in it, sixteen+"}, ["E007"]),
        ({"SENT_OTEL_METRICS_ALLOWED_NETWORKS": "10.0.0.0/8"}, ["E008"]),
        ({"SENT_OTEL_METRICS_ALLOWED_NETWORKS": ["10.0.0.0/8", "nope"]}, ["E008"]),
        ({"SENT_OTEL_METRICS_CLIENT_IP_HEADER": "X-Forwarded-For"}, ["E009"]),
        ({"SENT_OTEL_TRACER_PROVIDER": "no.such.provider"}, ["E010"]),
        ({"SENT_OTEL_TRACER_PROVIDER": 5}, ["E010"]),
    ],
)
def test_bad_settings_have_ids(settings: dict[str, Any], expected: list[str]) -> None:
    assert ids(**settings) == [f"django_sent_otel.{code}" for code in expected]


def test_good_values_pass() -> None:
    assert (
        ids(
            SENT_OTEL_EXCLUDED_PATHS=[r"^/health$"],
            SENT_OTEL_METRICS_NAMESPACE="shop",
            SENT_OTEL_METRICS_BUCKETS=[0.1, 1, 10],
            SENT_OTEL_METRICS_REGISTRY="tests.slots.registry",
            SENT_OTEL_METRICS_TOKEN="abcdefghijklmnop0123",
            SENT_OTEL_METRICS_ALLOWED_NETWORKS=["127.0.0.0/8", "::1/128"],
            SENT_OTEL_METRICS_CLIENT_IP_HEADER="HTTP_X_FORWARDED_FOR",
            SENT_OTEL_TRACER_PROVIDER=None,
        )
        == []
    )


def test_ids_are_unique_and_documented() -> None:
    assert len(set(IDS.values())) == len(IDS)
    assert all(code in IDS for code in SETTING_IDS.values())
    text = page("settings")
    for code in IDS:
        assert f"django_sent_otel.{code}" in text, code


def test_every_setting_of_the_table_maps_to_an_id() -> None:
    assert [s.name for s in SETTINGS] == list(SETTING_IDS)
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)


def test_a_string_false_is_an_error_and_the_default_stays(deliveries: list[Any]) -> None:
    # "false" is an error (E001), and the runtime keeps the default (enabled) meanwhile.
    with override_settings(SENT_OTEL_ENABLED="false"):
        assert ids() == ["django_sent_otel.E001"]
        Client().get("/small/")
    assert [d.route for d in deliveries] == ["small/"]


def test_middleware_position() -> None:
    with override_settings(MIDDLEWARE=[]):
        assert [m.id for m in check_middleware()] == ["django_sent_otel.W002"]
    with override_settings(
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django_sent_otel.middleware.DeliveryMiddleware",
        ]
    ):
        assert [m.id for m in check_middleware()] == ["django_sent_otel.W001"]
    with override_settings(
        MIDDLEWARE=[
            "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware",
            "django_sent_otel.middleware.DeliveryMiddleware",
        ]
    ):
        assert check_middleware() == []


def test_checks_are_registered() -> None:
    with (
        override_settings(SENT_OTEL_METRICS_NAMESPACE="bad-name"),
        pytest.raises(SystemCheckError, match=r"django_sent_otel\.E004"),
    ):
        call_command("check", stdout=StringIO(), stderr=StringIO())


@override_settings(
    SENT_OTEL_EXCLUDED_PATHS=["(unclosed"],
    SENT_OTEL_METRICS_BUCKETS="nonsense",
    SENT_OTEL_METRICS_NAMESPACE="bad-name",
    SENT_OTEL_METRICS_REGISTRY="no.such.registry",
    SENT_OTEL_TRACER_PROVIDER="no.such.provider",
)
def test_bad_settings_never_break_requests() -> None:
    response = Client().get("/small/")
    assert response.status_code == 200


def test_checks_run_under_their_own_tag_not_compatibility() -> None:
    from django.core import checks

    from django_sent_otel.checks import CHECK_TAG

    with override_settings(SENT_OTEL_ENABLED="yes", MIDDLEWARE=[]):
        ours = {m.id for m in checks.run_checks(tags=[CHECK_TAG])}
        compatibility = {m.id for m in checks.run_checks(tags=[checks.Tags.compatibility])}
    assert {"django_sent_otel.E001", "django_sent_otel.W002"} <= ours
    assert not any(str(i).startswith("django_sent_otel.") for i in compatibility)
