from __future__ import annotations

from django.urls import include, path

from tests import views

urlpatterns = [
    path("small/", views.small),
    path("big/", views.big),
    path("stream/", views.stream),
    path("astream/", views.astream),
    path("file/", views.file),
    path("error-stream/", views.error_stream),
    path("slow/", views.slow),
    path("aslow/", views.aslow),
    path("empty/", views.empty),
    path("not-modified/", views.not_modified),
    path("articles/<int:year>/", views.article),
    path("callback/", views.callback),
    path("async-small/", views.async_small),
    path("crash/", views.crash),
    path("wait-first/", views.wait_first),
    path("await-first/", views.await_first),
    path("slow-stream/", views.slow_stream),
    path("aslow-stream/", views.aslow_stream),
    path("leave/", views.leave),
    path("", include("django_sent_otel.urls")),
]
