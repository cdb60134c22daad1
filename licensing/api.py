"""Catalog endpoints: the models a host may serve and the terms in force for it."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApiError
from core.vocabulary import CUSTOMER_CATEGORIES
from licensing.auth import ApiKeyThrottle, IsHost
from licensing.entitlements import EntitlementQueryError, entitlement_check
from licensing.fields import BlankAsNullField, NormalizedDecimalField
from licensing.schema import ErrorOutput
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


class EntitlementOutput(serializers.Serializer):
    model = serializers.CharField(help_text="the model's slug (an alias resolves to it)")
    licensed = serializers.BooleanField()
    terms_version = serializers.CharField(
        allow_null=True,
        help_text="the label of the version or agreement in force; null when none is",
    )
    charge = serializers.CharField(allow_null=True, help_text='e.g. "12% of net revenue"')
    attribution = serializers.CharField(allow_null=True, help_text="text the host must display")
    reason = serializers.CharField(allow_null=True, help_text="why not, when licensed is false")


class EntitlementApi(APIView):
    """GET /api/v1/entitlements: may this host serve this model to this kind of customer."""

    permission_classes = [IsHost]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(
        operation_id="v1_entitlements_retrieve",
        parameters=[
            OpenApiParameter("model", str, required=True, description="a model slug or alias"),
            OpenApiParameter(
                "customer_category",
                str,
                enum=list(CUSTOMER_CATEGORIES),
                description="default: the host's default_customer_category",
            ),
            OpenApiParameter("region", str, description="ISO 3166-1 alpha-2; omitted: none"),
            OpenApiParameter("at", OpenApiTypes.DATETIME, description="default: now"),
        ],
        responses={200: EntitlementOutput, 400: ErrorOutput},
        description="The rule that would rate a record of this model, category, region and"
        " time for this host (its agreement included), or licensed false with the reason.",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        try:
            answer = entitlement_check(
                host=request.user.host,  # type: ignore[union-attr]
                model=params.get("model") or None,
                customer_category=params.get("customer_category") or None,
                region=params.get("region") or None,
                at=params.get("at") or None,
            )
        except EntitlementQueryError as exc:
            raise ApiError("invalid", str(exc), fields=exc.fields) from None
        return Response(EntitlementOutput(answer).data)
