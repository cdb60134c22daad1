"""The reads of the licensor's payouts page (`/admin/payouts/`, billing/site.py,
docs/workspace.md): each payout with its amounts, its settlements and what was refunded of them.
A reviewer's page reads only its licensor's payouts (`licensor_id`); an operator's (None) reads
all. A fixed number of queries whatever the number of payouts and settlements: the page of
payouts, the count, their settlements, the refunds of those, the currencies offered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet, Sum

from billing.models import PayableSettlement, Payout, PayoutStatus
from billing.refund_models import SettlementRefund
from billing.workspace import money
from core.money import from_minor_units

PER_PAGE = 25


def amount(minor: int, currency: str) -> str:
    """Minor units as the page shows them: "7,725.78"."""
    return money(from_minor_units(minor, currency), currency)


@dataclass
class PayoutSettlementRow:
    settlement_id: str
    host: str
    period: str
    total: str
    refunded: str | None  # None when nothing of it was refunded


@dataclass
class PayoutRow:
    payout: Payout
    gross: str
    fee: str
    withholding: str
    carried_forward: str
    net: str
    settlements: list[PayoutSettlementRow] = field(default_factory=list)


@dataclass
class PayoutsPage:
    rows: list[PayoutRow]
    page: Page[Any]
    currencies: list[str]  # the filter's choices: the currencies of the payouts this user sees
    statuses: list[str]
    currency: str
    status: str
    errors: dict[str, str]
    show_licensor: bool


def visible_payouts(licensor_id: int | None) -> QuerySet[Payout]:
    """The payouts a user may see: its licensor's for a reviewer, all for an operator (None)."""
    qs = Payout.objects.all()
    return qs if licensor_id is None else qs.filter(licensor_id=licensor_id)


def payouts_page(
    *, licensor_id: int | None, currency: str = "", status: str = "", page: str = "1"
) -> PayoutsPage:
    """The page of payouts, newest first, filtered by currency and status. A filter value that is
    not one of its choices is named in `errors` and not applied (never another tenant's
    currency: the choices are the user's own)."""
    visible = visible_payouts(licensor_id)
    currencies = sorted(visible.order_by().values_list("currency", flat=True).distinct())
    statuses = [value for value, _ in PayoutStatus.choices]
    errors = {}
    rows = visible.select_related("licensor").order_by("-day", "-created_at", "pk")
    if currency and currency not in currencies:
        errors["currency"] = f"{currency!r} is not a currency of your payouts"
    elif currency:
        rows = rows.filter(currency=currency)
    if status and status not in statuses:
        errors["status"] = f"{status!r} is not one of {', '.join(statuses)}"
    elif status:
        rows = rows.filter(status=status)
    shown = Paginator(rows, PER_PAGE).get_page(page)
    payouts = list(shown.object_list)
    items = list(
        PayableSettlement.objects.filter(payout__in=payouts)
        .select_related("settlement__host")
        .order_by("settlement__period", "settlement__host__slug")
    )
    refunded = dict(
        SettlementRefund.objects.filter(settlement_id__in=[i.settlement_id for i in items])
        .values("settlement_id")
        .annotate(total=Sum("amount_minor"))
        .values_list("settlement_id", "total")
    )
    by_payout: dict[Any, list[PayoutSettlementRow]] = {p.pk: [] for p in payouts}
    for item in items:
        refund = refunded.get(item.settlement_id)
        by_payout[item.payout_id].append(
            PayoutSettlementRow(
                settlement_id=str(item.settlement_id),
                host=item.settlement.host.name,
                period=item.settlement.period,
                total=amount(item.gross_minor, item.currency),
                refunded=amount(refund, item.currency) if refund else None,
            )
        )
    return PayoutsPage(
        rows=[
            PayoutRow(
                payout=p,
                gross=amount(p.gross_minor, p.currency),
                fee=amount(p.platform_fee_minor, p.currency),
                withholding=amount(p.withholding_minor, p.currency),
                carried_forward=amount(p.carried_forward_minor, p.currency),
                net=amount(p.net_minor, p.currency),
                settlements=by_payout[p.pk],
            )
            for p in payouts
        ],
        page=shown,
        currencies=currencies,
        statuses=statuses,
        currency=currency if "currency" not in errors else "",
        status=status if "status" not in errors else "",
        errors=errors,
        show_licensor=licensor_id is None,
    )


__all__ = ["PER_PAGE", "PayoutRow", "PayoutsPage", "amount", "payouts_page", "visible_payouts"]
