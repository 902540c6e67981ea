"""``path("", include("django_sent_otel.urls"))`` serves ``GET /metrics``."""

from __future__ import annotations

from django.urls import path

from .views import metrics

app_name = "django_sent_otel"
urlpatterns = [path("metrics", metrics, name="metrics")]
