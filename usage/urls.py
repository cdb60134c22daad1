from django.urls import path

from usage import api, events_api

urlpatterns = [
    path("usage", api.UsageApi.as_view(), name="usage"),
    path("events", events_api.EventsApi.as_view(), name="events"),
]
