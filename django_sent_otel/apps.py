from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed


class SentOtelConfig(AppConfig):
    name = "django_sent_otel"
    verbose_name = "django-sent-otel"

    def ready(self) -> None:
        from .checks import check_middleware, check_settings
        from .pipeline import reset

        checks.register(check_settings, checks.Tags.compatibility)
        checks.register(check_middleware, checks.Tags.compatibility)
        setting_changed.connect(reset, dispatch_uid="django_sent_otel.reset")
