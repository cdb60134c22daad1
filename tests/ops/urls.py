"""The project's URLs plus a view that fails, to see what an unhandled error answers and logs."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import handler404, handler500
from config.urls import urlpatterns as project_urls


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom: a bug in a view")


urlpatterns = [*project_urls, path("test-boom", boom)]

__all__ = ["handler404", "handler500", "urlpatterns"]
