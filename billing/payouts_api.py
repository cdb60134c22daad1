"""Payout endpoints (docs/api.md, docs/payouts.md): a licensor lists and reads its payouts and
downloads each one's statement. Another licensor's payout is 404, never 403; a host key is 403."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api import csv_text, money_text
from billing.models import PayableSettlement, Payout, PayoutStatus
from config.errors import ApiError
from core.money import from_minor_units, is_valid_currency
from licensing.auth import ApiKeyThrottle, IsLicensor, Principal


class MinorField(serializers.CharField):
    """An amount stored in minor units, rendered as a decimal string of its currency."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("source", "*")
        self.minor_attr = kwargs.pop("minor")
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> str:  # type: ignore[override]
        minor = getattr(value, self.minor_attr)
        return money_text(from_minor_units(minor, value.currency), value.currency)


class PayoutSettlementOutput(serializers.Serializer):
    id = serializers.CharField(source="settlement.pk")
    host = serializers.CharField(source="settlement.host.slug")
    period = serializers.CharField(source="settlement.period")
    total = MinorField(minor="gross_minor")


class PayoutOutput(serializers.Serializer):
    id = serializers.CharField()
    licensor = serializers.CharField(source="licensor.slug")
    currency = serializers.CharField()
    rail = serializers.ChoiceField(choices=["manual", "stripe_connect"])
    status = serializers.ChoiceField(choices=PayoutStatus.choices)
    gross = MinorField(minor="gross_minor")
    platform_fee = MinorField(minor="platform_fee_minor")
    withholding = MinorField(minor="withholding_minor")
    carried_forward = MinorField(minor="carried_forward_minor")
    net = MinorField(minor="net_minor")
    reference = serializers.CharField(allow_null=True)
    settlements = PayoutSettlementOutput(many=True, source="ordered_items")
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)


class PayoutListOutput(serializers.Serializer):
    results = PayoutOutput(many=True)


def _payouts(principal: Principal) -> QuerySet[Payout]:
    return Payout.objects.filter(licensor=principal.licensor).select_related("licensor")


def _with_items(payouts: list[Payout]) -> list[Payout]:
    """Each payout's settlements, in period order (two queries for the whole page)."""
    items: dict[Any, list[PayableSettlement]] = {p.pk: [] for p in payouts}
    for item in (
        PayableSettlement.objects.filter(payout__in=payouts)
        .select_related("settlement__host")
        .order_by("settlement__period", "settlement__host__slug")
    ):
        items[item.payout_id].append(item)
    for payout in payouts:
        payout.ordered_items = items[payout.pk]  # type: ignore[attr-defined]
    return payouts


def payout_render(payout: Payout) -> dict[str, Any]:
    """A payout as the API renders it, its settlements included (webhook events' `data`)."""
    return dict(PayoutOutput(_with_items([payout])[0]).data)


def _principal(request: Request) -> Principal:
    user = request.user
    assert isinstance(user, Principal)  # noqa: S101 - the permission classes guarantee it
    return user


def _get_or_404(request: Request, payout_id: str) -> Payout:
    try:
        pk = uuid.UUID(str(payout_id))
    except ValueError:
        pk = None
    payout = None if pk is None else _payouts(_principal(request)).filter(pk=pk).first()
    if payout is None:
        raise ApiError("not_found", "No such payout.", status_code=status.HTTP_404_NOT_FOUND)
    return _with_items([payout])[0]


class PayoutListApi(APIView):
    permission_classes = [IsLicensor]
    throttle_classes = [ApiKeyThrottle]

    class FilterSerializer(serializers.Serializer):
        currency = serializers.CharField(required=False, min_length=3, max_length=3)
        status = serializers.ChoiceField(choices=PayoutStatus.choices, required=False)

        def validate_currency(self, value: str) -> str:
            if not is_valid_currency(value):
                raise serializers.ValidationError("must be an ISO 4217 code such as USD")
            return value

    @extend_schema(
        operation_id="v1_payouts_list",
        parameters=[FilterSerializer],
        responses={200: PayoutListOutput},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        rows = _payouts(_principal(request)).filter(**filters.validated_data)
        payouts = _with_items(list(rows.order_by("-created_at")))
        return Response(PayoutListOutput({"results": payouts}).data)


class PayoutDetailApi(APIView):
    permission_classes = [IsLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(responses={200: PayoutOutput})
    def get(self, request: Request, payout_id: str) -> Response:
        return Response(PayoutOutput(_get_or_404(request, payout_id)).data)


STATEMENT_COLUMNS = [
    "payout_id",
    "licensor",
    "currency",
    "row",
    "host",
    "period",
    "settlement_id",
    "amount",
]


def payout_statement_csv(payout: Payout) -> str:
    """The payout's statement: one row per settlement in it (its total), then the totals (gross,
    platform fee, withholding, carried forward, net); amounts in major units, fees as negatives."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(STATEMENT_COLUMNS)
    head = [str(payout.pk), csv_text(payout.licensor.slug), payout.currency]
    rendered: dict[str, Any] = PayoutOutput(payout).data
    for item in rendered["settlements"]:
        writer.writerow(
            [*head, "settlement", csv_text(item["host"]), item["period"], item["id"], item["total"]]
        )
    for name in ("gross", "platform_fee", "withholding", "carried_forward", "net"):
        writer.writerow([*head, name, "", "", "", rendered[name]])
    return out.getvalue()


class PayoutStatementApi(APIView):
    permission_classes = [IsLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(responses={(200, "text/csv"): str})
    def get(self, request: Request, payout_id: str) -> HttpResponse:
        return statement_response(_get_or_404(request, payout_id))


def statement_response(payout: Payout) -> HttpResponse:
    """The payout's statement as a CSV download (the API's, and the admin's for a session)."""
    if not hasattr(payout, "ordered_items"):
        (payout,) = _with_items([payout])
    response = HttpResponse(payout_statement_csv(payout), content_type="text/csv; charset=utf-8")
    filename = f"payout-{payout.licensor.slug}-{payout.currency}-{payout.day.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
