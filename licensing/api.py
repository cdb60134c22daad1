"""Catalog endpoints: the models a host may serve and the terms in force for it."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from licensing.auth import ApiKeyThrottle, IsHost
from licensing.fields import BlankAsNullField, NormalizedDecimalField
from licensing.selectors import model_terms_for_host


class TermsOutput(serializers.Serializer):
    """The terms in force for the calling host: its agreement, else the public version."""

    # Renders a LicenseVersion or an Agreement row.

    kind = serializers.ChoiceField(choices=["version", "agreement"])
    label = serializers.CharField()  # type: ignore[assignment]
    effective_from = serializers.DateTimeField()
    currency = serializers.CharField()
    rules = serializers.JSONField()
    minimum_per_month = NormalizedDecimalField(max_digits=20, decimal_places=6, allow_null=True)
    cap_per_month = NormalizedDecimalField(max_digits=20, decimal_places=6, allow_null=True)
    attribution = BlankAsNullField(allow_null=True)


class ModelOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    licensor = serializers.CharField()
    license = serializers.CharField(help_text="the license that rates it (a derivative's parent's)")
    parent = serializers.CharField(allow_null=True)  # type: ignore[assignment]
    aliases = serializers.ListField(child=serializers.CharField())
    terms = TermsOutput(allow_null=True, help_text="null when no terms are in force yet")


class ModelListOutput(serializers.Serializer):
    results = ModelOutput(many=True)


class ModelListApi(APIView):
    """GET /api/v1/models: every model, its licensor and the terms in force for this host."""

    permission_classes = [IsHost]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(operation_id="v1_models_list", responses={200: ModelListOutput})
    def get(self, request: Request) -> Response:
        host = request.user.host  # type: ignore[union-attr]
        rows = model_terms_for_host(host=host, at=timezone.now())
        return Response(ModelListOutput({"results": rows}).data)
