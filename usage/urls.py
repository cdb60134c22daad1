from django.urls import path

from usage import api, events_api, rejections_api

urlpatterns = [
    path("usage", api.UsageApi.as_view(), name="usage"),
    path("usage/rejections", rejections_api.RejectionsApi.as_view(), name="usage-rejections"),
    path("events", events_api.EventsApi.as_view(), name="events"),
]
