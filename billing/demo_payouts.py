"""The demo's money flow (`seed_demo --usage`, docs/payouts.md "In the demo"): hosts pay, and
one licensor is paid out on each rail. The demo catalog's payout terms: MiniMax on `manual` (5%
fee, 10% withholding), Moonshot on `stripe_connect` (5% fee, account `acct_DemoMoonshot`).

1. Moonshot's Together settlement of the month is approved (as its reviewer would).
2. Every approved settlement of MiniMax and Moonshot is paid by its host by bank transfer
   (`record_host_payment`), except, when Stripe is configured, Moonshot's Together settlement of
   the month: approval invoiced it through Stripe, and it is paid when the host pays that invoice
   (the `invoice.paid` webhook).
3. `run_payouts` on the 5th of the next month: MiniMax's manual payouts are recorded as paid with
   a bank reference (what an operator does in the admin); Moonshot's stripe_connect payout is
   sent to its connected account when STRIPE_API_KEY is set, and otherwise stays pending, said
   plainly: the demo has no Stripe server of its own.

Idempotent: a settlement already paid, a day's payout already made, a payout already paid are
left as they are.
"""

from __future__ import annotations

import datetime as dt

from billing import stripe_gateway
from billing.models import Payout, PayoutStatus, Settlement, SettlementStatus
from billing.payouts import host_payment_record, money, payout_mark_paid, run_payouts
from billing.review import settlement_approve
from core.periods import add_months, period_parse

PAID_OUT = ("minimax", "moonshot")
STRIPE_PAID = ("moonshot", "together")  # (licensor, host) of the settlement Stripe collects


def payout_day(period: str) -> dt.date:
    """The demo's payout run: the 5th of the month after `period` (the monthly beat's day)."""
    year, month = add_months(*period_parse(period), 1)
    return dt.date(year, month, 5)


def demo_payouts(period: str) -> list[str]:
    """Steps 1-3 above for the demo month `period`; returns what was done, a line each."""
    out: list[str] = []
    stripe_paid = Settlement.objects.filter(
        period=period, licensor__slug=STRIPE_PAID[0], host__slug=STRIPE_PAID[1]
    ).first()
    if stripe_paid is not None and stripe_paid.status == SettlementStatus.DRAFT:
        stripe_paid = settlement_approve(settlement=stripe_paid, actor="demo")
        out.append(f"approved {_name(stripe_paid)} (as Moonshot's reviewer)")
    payable = Settlement.objects.filter(
        licensor__slug__in=PAID_OUT,
        status__in=(SettlementStatus.APPROVED, SettlementStatus.INVOICED),
        total__gt=0,
    ).select_related("licensor", "host")
    for settlement in payable.order_by("period", "licensor__slug", "host__slug"):
        if stripe_gateway.is_configured() and stripe_paid and settlement.pk == stripe_paid.pk:
            stripe_paid.refresh_from_db()
            out.append(
                f"{_name(settlement)}: invoiced through Stripe "
                f"({stripe_paid.stripe_invoice_id or 'invoice pending'}); paid when the host pays "
                "it (invoice.paid webhook)"
            )
            continue
        reference = f"DEMO-IN-{settlement.licensor.slug}-{settlement.host.slug}-{settlement.period}"
        reference = reference.upper()
        host_payment_record(settlement_id=str(settlement.pk), reference=reference)
        out.append(f"{_name(settlement)}: paid by bank transfer, reference {reference}")
    day = payout_day(period)
    run_payouts(as_of=day)
    payouts = Payout.objects.filter(licensor__slug__in=PAID_OUT, day=day).select_related("licensor")
    for payout in payouts.order_by("licensor__slug", "currency"):
        if payout.rail == "manual" and payout.status == PayoutStatus.PENDING:
            reference = f"DEMO-OUT-{payout.licensor.slug}-{payout.currency}-{day}".upper()
            payout = payout_mark_paid(payout_id=str(payout.pk), reference=reference)
        line = (
            f"payout {payout.licensor.slug} {day} {payout.rail}: "
            f"{money(payout.net_minor, payout.currency)} {payout.currency} {payout.status}"
        )
        if payout.reference:
            line += f", reference {payout.reference}"
        elif payout.rail == "stripe_connect" and not stripe_gateway.is_configured():
            line += (
                " (STRIPE_API_KEY is not set: the demo has no Stripe server, so the transfer "
                "waits; `run_payouts` sends it once Stripe is configured)"
            )
        elif payout.error:
            line += f" ({payout.error})"
        out.append(line)
    return out


def _name(settlement: Settlement) -> str:
    return f"{settlement.licensor.slug} <- {settlement.host.slug} {settlement.period}"


__all__ = ["demo_payouts", "payout_day"]
