from __future__ import annotations

from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("api/articles/<int:year>/", views.articles, name="articles"),
    path("export.csv", views.export_csv, name="export-csv"),
    path("download/", views.download, name="download"),
    path("report/", views.report, name="report"),
    path("tokens/", views.tokens, name="tokens"),
    path("atokens/", views.atokens, name="atokens"),
    path("steps/", views.steps, name="steps"),
    # Setup line 4: GET /metrics (Prometheus text or OpenMetrics).
    path("", include("django_sent_otel.urls")),
]
