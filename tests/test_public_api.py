"""The public API is what the package root exports: each name importable from there."""

from __future__ import annotations

import django_sent_otel
from django_sent_otel._version import __version__ as version


def test_the_root_exports_the_public_names() -> None:
    from django_sent_otel import (
        Delivery,
        __version__,
        is_disconnected,
        on_delivered,
        on_disconnect,
        response_delivered,
    )
    from django_sent_otel.delivery import Delivery as CoreDelivery
    from django_sent_otel.signals import response_delivered as signal

    assert sorted(django_sent_otel.__all__) == [
        "Delivery",
        "__version__",
        "is_disconnected",
        "on_delivered",
        "on_disconnect",
        "response_delivered",
    ]
    assert Delivery is CoreDelivery
    assert response_delivered is signal
    assert callable(on_delivered) and callable(is_disconnected) and callable(on_disconnect)
    assert __version__ == version


def test_every_exported_name_exists() -> None:
    for name in django_sent_otel.__all__:
        assert hasattr(django_sent_otel, name), name
