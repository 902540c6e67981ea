from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed


class SentOtelConfig(AppConfig):
    name = "django_sent_otel"
    verbose_name = "django-sent-otel"

    def ready(self) -> None:
        from .checks import CHECK_TAG, check_middleware, check_settings
        from .pipeline import reset

        # Our own tag: `manage.py check --tag django_sent_otel` runs just these.
        checks.register(check_settings, CHECK_TAG)
        checks.register(check_middleware, CHECK_TAG)
        setting_changed.connect(reset, dispatch_uid="django_sent_otel.reset")
