from __future__ import annotations

from debug_toolbar.toolbar import debug_toolbar_urls
from django.urls import path

from tests.compat import views
from tests.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    path("api/articles/", views.ArticleList.as_view()),
    path("api/stream/", views.ArticleStream.as_view()),
    path("api/crash/", views.Crash.as_view()),
    path("page/", views.page),
    *debug_toolbar_urls(),
    *project_urlpatterns,
]
