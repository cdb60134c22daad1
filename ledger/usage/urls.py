from django.urls import path

from ledger.usage import api

urlpatterns = [
    path("usage", api.UsageApi.as_view(), name="usage"),
    path("usage/summary", api.UsageSummaryApi.as_view(), name="usage-summary"),
]
