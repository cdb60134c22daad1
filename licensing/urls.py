from django.urls import path

from licensing import api

urlpatterns = [
    path("models", api.ModelListApi.as_view(), name="models"),
]
