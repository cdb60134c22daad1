"""Settlement endpoints (docs/api.md, docs/billing.md): licensors list, read, approve, dispute
and download theirs; hosts list and read their own. Another tenant's settlement is 404, never
403."""

from __future__ import annotations

import csv
import io
from decimal import Decimal, InvalidOperation
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.fields import get_attribute
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.errors import SettlementStateError
from billing.history import settlement_history
from billing.models import DISPUTE_REASON_CODES, Settlement, SettlementStatus
from billing.review import settlement_approve, settlement_dispute, settlement_respond
from billing.selectors import settlement_get, settlement_list
from config.errors import ApiError
from core.money import minor_unit_exponent, quantize
from core.periods import PERIOD_PATTERN
from core.vocabulary import FLAG_KINDS
from licensing.auth import ApiKeyThrottle, IsHost, IsHostOrLicensor, IsLicensor, Principal


def money_text(value: Decimal, currency: str) -> str:
    """A decimal string with at least the currency's minor digits ("75300.00"), and more only
    when the value has them (revenue is stored to 6 places)."""
    places = minor_unit_exponent(currency)
    rounded = quantize(value, currency)
    if rounded == value:
        return format(rounded, "f")
    text = format(value.normalize(), "f")
    return text if "." in text else text + "." + "0" * places


class MoneyField(serializers.CharField):
    """An amount as `money_text` writes it, in the currency found at the dotted path `currency`
    from the object rendered (a line's is its settlement's)."""

    def __init__(self, *, currency: str, **kwargs: Any) -> None:
        self.currency_path = currency.split(".")
        super().__init__(**kwargs)

    def get_attribute(self, instance: Any) -> Any:
        return super().get_attribute(instance), get_attribute(instance, self.currency_path)

    def to_representation(self, value: Any) -> str | None:  # type: ignore[override]
        amount, currency = value
        return None if amount is None else money_text(amount, currency)


class LineOutput(serializers.Serializer):
    # The line's row id: stable for as long as the line exists, and a settled settlement's lines
    # never change; a dispute names lines by it.
    id = serializers.CharField()
    kind = serializers.CharField()
    model = serializers.CharField()
    customer_category = serializers.CharField()
    period = serializers.CharField()
    license_version = serializers.CharField()
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    requests = serializers.IntegerField()
    revenue = MoneyField(currency="settlement.currency")
    amount = MoneyField(currency="settlement.currency")
    description = serializers.CharField()


class FlagOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=FLAG_KINDS)
    model = serializers.CharField()
    customer_category = serializers.CharField()
    record_count = serializers.IntegerField()
    message = serializers.CharField()


class SettlementOutput(serializers.Serializer):
    id = serializers.CharField()
    licensor = serializers.CharField(source="licensor.slug")
    host = serializers.CharField(source="host.slug")
    period = serializers.CharField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=SettlementStatus.choices)
    total = MoneyField(currency="currency")
    usage_digest = serializers.CharField()
    terms_digest = serializers.CharField()
    lines = LineOutput(many=True)
    flags = FlagOutput(many=True)
    revision = serializers.IntegerField()
    supersedes = serializers.CharField(source="supersedes_id", allow_null=True)
    superseded_by = serializers.CharField(source="superseded_by_pk", allow_null=True)
    review_due_at = serializers.DateTimeField(allow_null=True)
    decided_by = serializers.CharField()


class SettlementListOutput(serializers.Serializer):
    results = SettlementOutput(many=True)


def _settlement_output(settlement: Settlement) -> Any:
    return SettlementOutput(settlement).data


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
    """Who acted, as a settlement's history and `decided_by` name it."""
    principal = _principal(request)
    if principal.host is not None:
        return f"host:{principal.host.slug}"
    assert principal.licensor is not None  # noqa: S101 - a principal is a host or a licensor
    return f"licensor:{principal.licensor.slug}"


class SettlementListApi(APIView):
    permission_classes = [IsHostOrLicensor]
    throttle_classes = [ApiKeyThrottle]

    class FilterSerializer(serializers.Serializer):
        period = serializers.RegexField(PERIOD_PATTERN, required=False)
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
        return Response(SettlementListOutput({"results": rows}).data)


class SettlementDetailApi(APIView):
    permission_classes = [IsHostOrLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(responses={200: SettlementOutput})
    def get(self, request: Request, settlement_id: str) -> Response:
        return Response(_settlement_output(_get_or_404(request, settlement_id)))


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
        return Response(_settlement_output(fresh))


def contested_amount(value: Any) -> Decimal:
    """A dispute's `amount`: a decimal string >= 0 with at most 4 places (never a JSON number,
    which a client may have passed through a binary float)."""
    if not isinstance(value, str):
        raise serializers.ValidationError('must be a decimal string such as "120.00"')
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise serializers.ValidationError('must be a decimal string such as "120.00"') from None
    if not amount.is_finite():
        raise serializers.ValidationError('must be a decimal string such as "120.00"')
    if amount < 0:
        raise serializers.ValidationError("must be at least 0")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise serializers.ValidationError("must have at most 4 decimal places")
    if amount >= Decimal(10) ** 20:
        raise serializers.ValidationError("must be below 10^20")
    return amount


class DisputeInput(serializers.Serializer):
    """A dispute (docs/billing.md, "Disputes"); `lines` are checked against the settlement's own
    line ids, given in the context as `line_ids`."""

    reason = serializers.CharField(max_length=5000, trim_whitespace=True)
    reason_code = serializers.ChoiceField(choices=DISPUTE_REASON_CODES, default="other")
    lines = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    amount = serializers.JSONField(required=False, allow_null=True, default=None)

    def validate_lines(self, value: list[str]) -> list[str]:
        unknown = [i for i in value if i not in self.context["line_ids"]]
        if unknown:
            raise serializers.ValidationError(
                f"not lines of this settlement: {', '.join(unknown[:5])}"
            )
        return value

    def validate_amount(self, value: Any) -> Decimal | None:
        return None if value is None else contested_amount(value)


class SettlementDisputeApi(APIView):
    permission_classes = [IsLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(request=DisputeInput, responses={200: SettlementOutput})
    def post(self, request: Request, settlement_id: str) -> Response:
        settlement = _get_or_404(request, settlement_id)
        line_ids = {str(pk) for pk in settlement.lines.values_list("pk", flat=True)}
        data = DisputeInput(data=request.data, context={"line_ids": line_ids})
        data.is_valid(raise_exception=True)
        try:
            settlement = settlement_dispute(
                settlement=settlement,
                reason=data.validated_data["reason"],
                reason_code=data.validated_data["reason_code"],
                lines=data.validated_data["lines"],
                amount=data.validated_data["amount"],
                actor=_actor(request),
            )
        except SettlementStateError as exc:
            raise ApiError("invalid_state", str(exc), status_code=409) from exc
        fresh = settlement_get(principal=_principal(request), settlement_id=str(settlement.pk))
        assert fresh is not None  # noqa: S101 - it was ours a moment ago
        return Response(_settlement_output(fresh))


class SettlementRespondApi(APIView):
    """The host's answer to a dispute of its settlement."""

    permission_classes = [IsHost]
    throttle_classes = [ApiKeyThrottle]

    class InputSerializer(serializers.Serializer):
        message = serializers.CharField(max_length=5000, trim_whitespace=True)

    @extend_schema(request=InputSerializer, responses={200: SettlementOutput})
    def post(self, request: Request, settlement_id: str) -> Response:
        settlement = _get_or_404(request, settlement_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            settlement_respond(
                settlement=settlement,
                message=data.validated_data["message"],
                actor=_actor(request),
            )
        except SettlementStateError as exc:
            raise ApiError("invalid_state", str(exc), status_code=409) from exc
        fresh = settlement_get(principal=_principal(request), settlement_id=str(settlement.pk))
        assert fresh is not None  # noqa: S101 - it was ours a moment ago
        return Response(_settlement_output(fresh))


class EventOutput(serializers.Serializer):
    at = serializers.DateTimeField()
    actor = serializers.CharField()
    action = serializers.CharField()
    detail = serializers.DictField()


class HistoryOutput(serializers.Serializer):
    results = EventOutput(many=True)


class SettlementHistoryApi(APIView):
    """A settlement's own events in time order, for its licensor and its host."""

    permission_classes = [IsHostOrLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(responses={200: HistoryOutput})
    def get(self, request: Request, settlement_id: str) -> Response:
        settlement = _get_or_404(request, settlement_id)
        events = settlement_history(settlement=settlement)
        return Response(HistoryOutput({"results": events}).data)


# A statement row: the settlement's identity, then the line as the API renders it (LineOutput's
# fields, in order), then its flags.
_STATEMENT_HEAD = ["settlement_id", "licensor", "host", "settlement_period", "currency", "status"]
STATEMENT_COLUMNS = [*_STATEMENT_HEAD, "position", *LineOutput().fields, "flags"]


# A spreadsheet reads a cell that starts with one of these as a formula (or, for tab and CR, may
# shift it into one): `=HYPERLINK(...)` in a version label would run on the licensor's machine.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


# The line fields that carry text; the others are numbers (amounts, counts) or fixed formats.
_CSV_TEXT_FIELDS = frozenset(
    {"kind", "model", "customer_category", "license_version", "description"}
)


def csv_text(value: str) -> str:
    """A text cell that a spreadsheet shows as text: a leading formula trigger gets a single
    quote before it (OWASP's advice for CSV injection). Only text columns go through here:
    amounts and counts are written as numbers, so "-12.00" stays a negative number."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def statement_csv(s: Settlement) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(STATEMENT_COLUMNS)
    head = [
        str(s.pk),
        csv_text(s.licensor.slug),
        csv_text(s.host.slug),
        s.period,
        s.currency,
        s.status,
    ]
    for line in s.lines.all():
        rendered = [
            csv_text(value) if name in _CSV_TEXT_FIELDS else value
            for name, value in LineOutput(line).data.items()
        ]
        writer.writerow([*head, line.position, *rendered, csv_text(" ".join(line.flags))])
    # Then one row per flag of the settlement (unlicensed usage has no line of its own): no
    # position, kind, quantities or amount; the line columns it has are the flag's model and
    # category, the settlement's period and the flag's terms label; its message and record count
    # in `description`, its kind in `flags`.
    for stored in s.flags:
        flag = FlagOutput(stored).data
        cells = dict.fromkeys(LineOutput().fields, "")
        cells.update(
            model=flag["model"],
            customer_category=flag["customer_category"],
            period=s.period,
            license_version=stored.get("license_version") or "",
            description=f"{flag['message']} ({flag['record_count']} records)",
        )
        rendered = [
            csv_text(value) if name in _CSV_TEXT_FIELDS else value for name, value in cells.items()
        ]
        writer.writerow([*head, "", *rendered, flag["kind"]])
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
