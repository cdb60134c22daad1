from django.urls import path

from licensing import api

urlpatterns = [
    path("models", api.ModelListApi.as_view(), name="models"),
    path("entitlements", api.EntitlementApi.as_view(), name="entitlements"),
]
