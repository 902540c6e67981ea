from __future__ import annotations

from django.urls import include, path

from benchmarks import views

urlpatterns = [
    path("", views.hello),
    path("item/<int:pk>/", views.item),
    path("async/", views.ahello),
    path("stream/<int:chunks>/", views.stream),
    path("astream/<int:chunks>/", views.astream),
    path("file/", views.file),
    path("file-reads/", views.file_reads),
    path("", include("django_sent_otel.urls")),
]
