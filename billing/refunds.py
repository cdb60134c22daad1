"""A refund of a host's Stripe payment (docs/payouts.md, "Refunds"): Stripe's `charge.refunded`.

    the webhook view finds the invoice the charge paid (stripe_gateway.invoice_of_charge, a
    Stripe call outside any transaction), then, in the event's own transaction (each event once):
    charge_refunded_post ─ a SettlementRefund row, the licensor's share carried into its next
        payout as a negative PayoutAdjustment, and one ledger entry:
        licensor payable (its share) + platform_revenue (fee) + tax_payable (withholding) / cash

The refunded part R of a settlement of total T is split in the proportions the payment was:
fee and withholding are those posted for T scaled by the cumulative refunded amount, each rounded
half up once, and a later refund takes the difference; so a full refund, in any number of steps,
gives back exactly the fee and withholding that were posted. The settlement stays `paid`.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from billing.history import settlement_event_record
from billing.models import (
    PayableSettlement,
    PayoutAdjustment,
    Settlement,
    SettlementStatus,
    StripeEvent,
)
from billing.refund_models import SettlementRefund
from core.money import from_minor_units, whole_units
from ledger.models import AccountKind
from ledger.services import PostingSpec, account_for, journal_post

logger = logging.getLogger(__name__)


def refund_share(part_minor: int, *, refunded_minor: int, gross_minor: int) -> int:
    """The share of `part_minor` (a fee or withholding of a payment of `gross_minor`) that a
    cumulative refund of `refunded_minor` gives back, rounded half up once."""
    return whole_units(Decimal(part_minor) * refunded_minor / gross_minor)


def refund_mismatch(*, charge: dict[str, Any], settlement: Settlement, gross_minor: int) -> str:
    """What in a refunded charge cannot be the settlement's payment ("" when nothing): its
    currency, its customer (the host's), an amount_refunded that is not an integer between 0
    and the settlement's total."""
    problems = []
    currency = str(charge.get("currency") or "").upper()
    if currency != settlement.currency:
        problems.append(f"currency {currency or '(none)'} != {settlement.currency}")
    customer = charge.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    expected = settlement.host.stripe_customer_id
    if not expected or customer != expected:
        problems.append(f"customer {customer or '(none)'} != {expected or '(none)'}")
    refunded = charge.get("amount_refunded")
    if (
        not isinstance(refunded, int)
        or isinstance(refunded, bool)
        or not 0 <= refunded <= gross_minor
    ):
        problems.append(f"amount_refunded {refunded!r} is not 0..{gross_minor}")
    return "; ".join(problems)


def charge_refunded_post(*, event_id: int, charge: dict[str, Any], invoice_id: str | None) -> str:
    """Record what `charge.amount_refunded` (cumulative on Stripe) adds to the refunds already
    recorded for that charge. Inside the webhook's transaction; the event's row (`event_id`)
    gets the outcome, the settlement and any mismatch, for operators (admin, Stripe events)."""
    settlement_id, outcome, mismatch = _charge_refunded(charge=charge, invoice_id=invoice_id)
    StripeEvent.objects.filter(pk=event_id).update(
        outcome=outcome[:200], mismatch=mismatch, settlement_id=settlement_id
    )
    return outcome


def _charge_refunded(*, charge: dict[str, Any], invoice_id: str | None) -> tuple[Any, str, str]:
    charge_id = str(charge.get("id") or "")
    if not invoice_id or not charge_id:
        return None, "ignored: the charge paid no invoice of ours", ""
    # FOR UPDATE: two refund events of one settlement (or a refund and a payment) serialize here.
    settlement = (
        Settlement.objects.select_for_update(of=("self",))
        .select_related("host", "licensor")
        .filter(stripe_invoice_id=invoice_id)
        .first()
    )
    if settlement is None:
        return None, f"ignored: invoice {invoice_id} is no settlement's", ""
    if settlement.status != SettlementStatus.PAID:
        logger.error(
            "charge %s refunded, settlement %s is %s", charge_id, settlement.pk, settlement.status
        )
        return settlement.pk, f"ignored: settlement {settlement.pk} is {settlement.status}", ""
    payable = PayableSettlement.objects.filter(settlement=settlement).first()
    if payable is None:
        return (
            settlement.pk,
            f"ignored: settlement {settlement.pk} was paid before payouts existed",
            "",
        )
    gross = payable.gross_minor
    mismatch = refund_mismatch(charge=charge, settlement=settlement, gross_minor=gross)
    if mismatch:
        logger.error(
            "charge %s refunded, not settlement %s's: %s", charge_id, settlement.pk, mismatch
        )
        return settlement.pk, f"mismatch: settlement {settlement.pk} refund not posted", mismatch
    cumulative = int(charge["amount_refunded"])
    of_charge = (
        SettlementRefund.objects.filter(charge_id=charge_id).aggregate(total=Sum("amount_minor"))[
            "total"
        ]
        or 0
    )
    new = cumulative - of_charge
    if new <= 0:
        return settlement.pk, f"settlement {settlement.pk}: refund already recorded", ""
    before = (
        SettlementRefund.objects.filter(settlement=settlement).aggregate(total=Sum("amount_minor"))[
            "total"
        ]
        or 0
    )
    after = before + new
    if after > gross:
        return (
            settlement.pk,
            "mismatch: refunds exceed the payment",
            f"refunded {after} > paid {gross}",
        )

    def given_back(part: int) -> int:
        return refund_share(part, refunded_minor=after, gross_minor=gross) - refund_share(
            part, refunded_minor=before, gross_minor=gross
        )

    fee = given_back(payable.platform_fee_minor)
    withholding = given_back(payable.withholding_minor)
    share = new - fee - withholding
    SettlementRefund.objects.create(
        settlement=settlement,
        charge_id=charge_id,
        cumulative_minor=cumulative,
        amount_minor=new,
        platform_fee_minor=fee,
        withholding_minor=withholding,
        licensor_share_minor=share,
    )
    # In the settlement's history too: what came back to the host, next to how it was paid.
    settlement_event_record(
        settlement=settlement,
        actor="stripe",
        action="refunded",
        detail={
            "charge": charge_id,
            "amount": format(from_minor_units(new, settlement.currency), "f"),
            "refunded in all": format(from_minor_units(after, settlement.currency), "f"),
            "licensor share": format(from_minor_units(share, settlement.currency), "f"),
        },
    )
    key = f"refund:{charge_id}:{cumulative}"
    if share:
        PayoutAdjustment.objects.create(
            licensor=settlement.licensor,
            currency=settlement.currency,
            amount_minor=-share,
            source=key,
            description=f"refund of settlement {settlement.host.slug} {settlement.period}",
        )
    _refund_post(settlement=settlement, key=key, amount=new, fee=fee, withholding=withholding)
    return settlement.pk, f"settlement {settlement.pk}: {new} refunded, {share} carried forward", ""


def _refund_post(
    *, settlement: Settlement, key: str, amount: int, fee: int, withholding: int
) -> None:
    """Cash goes back to the host; the licensor's payable, the platform's fee and the tax withheld
    each give back their share. Last in the transaction (the ledger's chain lock)."""
    currency = settlement.currency
    legs = [
        (
            account_for(owner=settlement.licensor, kind=AccountKind.PAYABLE, currency=currency),
            amount - fee - withholding,
        ),
        (account_for(owner=None, kind=AccountKind.PLATFORM_REVENUE, currency=currency), fee),
        (account_for(owner=None, kind=AccountKind.TAX_PAYABLE, currency=currency), withholding),
        (account_for(owner=None, kind=AccountKind.CASH, currency=currency), -amount),
    ]
    journal_post(
        idempotency_key=key,
        memo=f"Refund to {settlement.host.slug} of settlement {settlement.licensor.slug}/"
        f"{settlement.host.slug} {settlement.period}: {amount}",
        postings=[PostingSpec(account=a, amount_minor=m) for a, m in legs if m],
        reference_type="settlement",
        reference_id=str(settlement.pk),
    )


__all__ = ["charge_refunded_post", "refund_mismatch", "refund_share"]
