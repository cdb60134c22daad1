"""Catalog endpoints: the models a host may serve and the terms in force for it."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from licensing.auth import ApiKeyThrottle, IsHost
from licensing.selectors import model_terms_for_host


class ModelListApi(APIView):
    permission_classes = [IsHost]
    throttle_classes = [ApiKeyThrottle]

    class TermsSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=["version", "agreement"])
        label = serializers.CharField()  # type: ignore[assignment]
        effective_from = serializers.DateTimeField()
        currency = serializers.CharField()
        rules = serializers.JSONField()
        minimum_per_month = serializers.DecimalField(
            max_digits=20, decimal_places=6, allow_null=True
        )
        cap_per_month = serializers.DecimalField(max_digits=20, decimal_places=6, allow_null=True)
        attribution = serializers.CharField(allow_null=True)

    class OutputSerializer(serializers.Serializer):
        slug = serializers.CharField()
        name = serializers.CharField()
        licensor = serializers.CharField()
        license = serializers.CharField()
        parent = serializers.CharField(allow_null=True)  # type: ignore[assignment]
        aliases = serializers.ListField(child=serializers.CharField())
        terms = serializers.JSONField(allow_null=True)

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        host = request.user.host  # type: ignore[union-attr]
        rows = model_terms_for_host(host=host, at=timezone.now())
        return Response({"results": rows})
