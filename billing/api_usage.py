"""`GET /api/v1/usage/summary`: a host's month so far with billing's estimate of each line.

It lives in billing because the estimate is billing's (the same aggregation and rating a run uses);
usage only supplies the totals.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api import MoneyField
from billing.estimates import usage_summary_estimate
from config.errors import ApiError
from licensing.auth import ApiKeyThrottle, IsHost
from licensing.fields import DecimalTextField
from usage.api import ErrorSerializer
from usage.selectors import QueryError


class SummaryLineSerializer(serializers.Serializer):
    model = serializers.CharField()
    customer_category = serializers.CharField()
    currency = serializers.CharField()
    records = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    requests = serializers.IntegerField()
    revenue = DecimalTextField()
    late_records = serializers.IntegerField()
    estimated_charge = MoneyField(
        currency="currency",
        allow_null=True,
        help_text="the usage lines' amount for this model and category so far, in the terms' "
        "currency; null when no terms rate it",
    )


class EstimateSerializer(serializers.Serializer):
    licensor = serializers.CharField()
    currency = serializers.CharField()
    total = MoneyField(
        currency="currency", help_text="the draft's total so far, minimums and caps included"
    )


class SummarySerializer(serializers.Serializer):
    period = serializers.CharField()
    totals = SummaryLineSerializer(many=True)
    estimated_charge = EstimateSerializer(
        many=True, help_text="what a billing run would write now, per licensor and currency"
    )


class UsageSummaryApi(APIView):
    permission_classes = [IsHost]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(
        operation_id="usage_summary",
        parameters=[OpenApiParameter("period", str, required=True, description="YYYY-MM")],
        responses={200: SummarySerializer, 400: ErrorSerializer},
    )
    def get(self, request: Request) -> Response:
        host = request.user.host  # type: ignore[union-attr]
        period = request.query_params.get("period", "")
        try:
            summary = usage_summary_estimate(host=host, period=period)
        except QueryError as exc:
            raise ApiError("invalid", str(exc), fields={exc.field: [str(exc)]}) from None
        return Response(SummarySerializer(summary).data)
