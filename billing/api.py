"""Settlement endpoints (contract §3): licensors list, read, approve, dispute and download theirs;
hosts list and read their own. Another tenant's settlement is 404, never 403."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.models import Settlement, SettlementStatus
from billing.selectors import settlement_get, settlement_list
from billing.services import SettlementStateError, settlement_approve, settlement_dispute
from config.errors import ApiError
from core.money import minor_unit_exponent, quantize
from licensing.auth import ApiKeyThrottle, IsHostOrLicensor, IsLicensor, Principal


def money_text(value: Decimal, currency: str) -> str:
    """A decimal string with at least the currency's minor digits ("75300.00"), and more only
    when the value has them (revenue is stored to 6 places)."""
    places = minor_unit_exponent(currency)
    rounded = quantize(value, currency)
    if rounded == value:
        return format(rounded, "f")
    text = format(value.normalize(), "f")
    return text if "." in text else text + "." + "0" * places


def settlement_json(s: Settlement) -> dict[str, Any]:
    return {
        "id": str(s.pk),
        "licensor": s.licensor.slug,
        "host": s.host.slug,
        "period": s.period,
        "currency": s.currency,
        "status": s.status,
        "total": money_text(s.total, s.currency),
        "usage_digest": s.usage_digest,
        "terms_digest": s.terms_digest,
        "lines": [
            {
                "kind": line.kind,
                "model": line.model,
                "customer_category": line.customer_category,
                "period": line.period,
                "license_version": line.license_version,
                "input_tokens": line.input_tokens,
                "cached_input_tokens": line.cached_input_tokens,
                "output_tokens": line.output_tokens,
                "requests": line.requests,
                "revenue": money_text(line.revenue, s.currency),
                "amount": money_text(line.amount, s.currency),
                "description": line.description,
            }
            for line in s.lines.all()
        ],
        "flags": [settlement_flag_json(flag) for flag in s.flags],
    }


FLAG_KEYS = ("kind", "model", "customer_category", "record_count", "message")


def settlement_flag_json(flag: dict[str, Any]) -> dict[str, Any]:
    """A flag of the settlement (unlicensed usage, an attribution to display) as the contract
    shows it; the stored flag also names the license and terms, which its message repeats."""
    return {key: flag.get(key) for key in FLAG_KEYS}


class LineOutput(serializers.Serializer):
    kind = serializers.CharField()
    model = serializers.CharField()
    customer_category = serializers.CharField()
    period = serializers.CharField()
    license_version = serializers.CharField()
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    requests = serializers.IntegerField()
    revenue = serializers.CharField()
    amount = serializers.CharField()
    description = serializers.CharField()


class FlagOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["unlicensed", "attribution"])
    model = serializers.CharField()
    customer_category = serializers.CharField()
    record_count = serializers.IntegerField()
    message = serializers.CharField()


class SettlementOutput(serializers.Serializer):
    id = serializers.CharField()
    licensor = serializers.CharField()
    host = serializers.CharField()
    period = serializers.CharField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=SettlementStatus.choices)
    total = serializers.CharField()
    usage_digest = serializers.CharField()
    terms_digest = serializers.CharField()
    lines = LineOutput(many=True)
    flags = FlagOutput(many=True)


class SettlementListOutput(serializers.Serializer):
    results = SettlementOutput(many=True)


def _principal(request: Request) -> Principal:
    user = request.user
    assert isinstance(user, Principal)  # noqa: S101 - the permission classes guarantee it
    return user


def _get_or_404(request: Request, settlement_id: str) -> Settlement:
    settlement = settlement_get(principal=_principal(request), settlement_id=settlement_id)
    if settlement is None:
        raise ApiError("not_found", "No such settlement.", status_code=status.HTTP_404_NOT_FOUND)
    return settlement


def _actor(request: Request) -> str:
    principal = _principal(request)
    return f"api-key:{principal.api_key_id}"


class SettlementListApi(APIView):
    permission_classes = [IsHostOrLicensor]
    throttle_classes = [ApiKeyThrottle]

    class FilterSerializer(serializers.Serializer):
        period = serializers.RegexField(r"^[0-9]{4}-(0[1-9]|1[0-2])$", required=False)
        host = serializers.CharField(required=False)
        status = serializers.ChoiceField(choices=SettlementStatus.choices, required=False)

    @extend_schema(
        operation_id="v1_settlements_list",
        parameters=[FilterSerializer],
        responses={200: SettlementListOutput},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        rows = settlement_list(principal=_principal(request), **filters.validated_data)
        return Response({"results": [settlement_json(s) for s in rows]})


class SettlementDetailApi(APIView):
    permission_classes = [IsHostOrLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(responses={200: SettlementOutput})
    def get(self, request: Request, settlement_id: str) -> Response:
        return Response(settlement_json(_get_or_404(request, settlement_id)))


class SettlementApproveApi(APIView):
    permission_classes = [IsLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(request=None, responses={200: SettlementOutput})
    def post(self, request: Request, settlement_id: str) -> Response:
        settlement = _get_or_404(request, settlement_id)
        try:
            settlement = settlement_approve(settlement=settlement, actor=_actor(request))
        except SettlementStateError as exc:
            raise ApiError("invalid_state", str(exc), status_code=409) from exc
        fresh = settlement_get(principal=_principal(request), settlement_id=str(settlement.pk))
        assert fresh is not None  # noqa: S101 - it was ours a moment ago
        return Response(settlement_json(fresh))


class SettlementDisputeApi(APIView):
    permission_classes = [IsLicensor]
    throttle_classes = [ApiKeyThrottle]

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=5000, trim_whitespace=True)

    @extend_schema(request=InputSerializer, responses={200: SettlementOutput})
    def post(self, request: Request, settlement_id: str) -> Response:
        settlement = _get_or_404(request, settlement_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            settlement = settlement_dispute(
                settlement=settlement,
                reason=data.validated_data["reason"],
                actor=_actor(request),
            )
        except SettlementStateError as exc:
            raise ApiError("invalid_state", str(exc), status_code=409) from exc
        fresh = settlement_get(principal=_principal(request), settlement_id=str(settlement.pk))
        assert fresh is not None  # noqa: S101 - it was ours a moment ago
        return Response(settlement_json(fresh))


STATEMENT_COLUMNS = [
    "settlement_id",
    "licensor",
    "host",
    "settlement_period",
    "currency",
    "status",
    "position",
    "kind",
    "model",
    "customer_category",
    "period",
    "license_version",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "requests",
    "revenue",
    "amount",
    "description",
    "flags",
]


def statement_csv(s: Settlement) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(STATEMENT_COLUMNS)
    for line in s.lines.all():
        writer.writerow(
            [
                str(s.pk),
                s.licensor.slug,
                s.host.slug,
                s.period,
                s.currency,
                s.status,
                line.position,
                line.kind,
                line.model,
                line.customer_category,
                line.period,
                line.license_version,
                line.input_tokens,
                line.cached_input_tokens,
                line.output_tokens,
                line.requests,
                money_text(line.revenue, s.currency),
                money_text(line.amount, s.currency),
                line.description,
                " ".join(line.flags),
            ]
        )
    # Then one row per flag of the settlement (unlicensed usage has no line of its own): no
    # position, kind, quantities or amount; the flag's kind in `flags`, its message and record
    # count in `description`.
    for flag in s.flags:
        records = flag.get("record_count")
        writer.writerow(
            [
                *(str(s.pk), s.licensor.slug, s.host.slug, s.period, s.currency, s.status),
                *("", "", flag.get("model", ""), flag.get("customer_category", ""), s.period),
                *(flag.get("license_version") or "", "", "", "", "", "", ""),
                *(f"{flag.get('message', '')} ({records} records)", flag.get("kind", "")),
            ]
        )
    return out.getvalue()


class SettlementStatementApi(APIView):
    permission_classes = [IsLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(responses={(200, "text/csv"): str})
    def get(self, request: Request, settlement_id: str) -> HttpResponse:
        s = _get_or_404(request, settlement_id)
        response = HttpResponse(statement_csv(s), content_type="text/csv; charset=utf-8")
        filename = f"settlement-{s.licensor.slug}-{s.host.slug}-{s.period}-{s.currency}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
