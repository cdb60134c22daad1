"""Writes of invoicing: an approved settlement becomes a Stripe invoice, and Stripe's webhook
marks it paid (docs/stripe.md). Beside review.py because it is one concern of its own: the
only writes here are the settlement's invoicing columns, the processed-events table and the
payment posted to the ledger.

    approved --settlement_invoice--> invoiced --stripe_event_process(invoice.paid)--> paid

Stripe is never called inside a transaction: `settlement_invoice` claims the settlement with a
conditional update (autocommit), calls the gateway, then records the outcome in a short
transaction. A crash anywhere in between is healed by calling it again: the gateway finds what
it already sent by metadata, and the claim of a dead worker expires after INVOICING_LEASE.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing import stripe_gateway
from billing.errors import InvoicingInProgress, SettlementStateError
from billing.events import settlement_event
from billing.history import SYSTEM, settlement_event_record
from billing.models import Settlement, SettlementLine, SettlementStatus, StripeEvent
from billing.payouts import settlement_paid_post, transfer_reversed_post
from billing.refunds import charge_refunded_post
from core.money import quantize, to_minor_units

logger = logging.getLogger(__name__)

# How long an invoicing attempt holds its claim: longer than any Stripe round of calls (seconds),
# short enough that a dead worker's settlement is taken over by the next sweep.
INVOICING_LEASE = timedelta(minutes=15)

# `invoice.payment_succeeded` is what old-shaped payloads (API versions before `invoice.paid`
# existed, and localstripe) send for the same fact.
PAID_EVENT_TYPES = frozenset({"invoice.paid", "invoice.payment_succeeded"})


def _minor(amount: Any, currency: str) -> int:
    return to_minor_units(quantize(amount, currency), currency)


def _line_text(line: SettlementLine, settlement: Settlement) -> str:
    parts = [p for p in (line.model, line.customer_category) if p]
    if line.kind != "usage":
        parts.insert(0, line.get_kind_display())
    if line.period != settlement.period:
        parts.append(f"for {line.period}")
    return f"{' · '.join(parts)}: {line.description}" if parts else line.description


def invoice_lines(settlement: Settlement) -> list[stripe_gateway.InvoiceLine]:
    """One invoice item per settlement line with a non-zero amount, negative lines (cap credits,
    downward adjustments) as negative items: the host reads the same lines on the invoice as on
    the statement. Over Stripe's item limit, one item for the total instead."""
    currency = settlement.currency
    lines = [
        stripe_gateway.InvoiceLine(
            position=line.position,
            description=_line_text(line, settlement),
            amount_minor=_minor(line.amount, currency),
        )
        for line in settlement.lines.order_by("position")
    ]
    lines = [line for line in lines if line.amount_minor != 0]
    total = _minor(settlement.total, currency)
    if len(lines) > stripe_gateway.MAX_INVOICE_ITEMS or sum(x.amount_minor for x in lines) != total:
        return [
            stripe_gateway.InvoiceLine(
                position=0,
                description=f"Licensing {settlement.period}: {len(lines)} lines, see the statement",
                amount_minor=total,
            )
        ]
    return lines


def settlement_invoice(*, settlement: Settlement) -> Settlement:
    """Send the approved settlement's invoice through Stripe and move it to `invoiced`.

    Safe to repeat: an invoiced or paid settlement is returned as it is; a zero or negative total
    is not invoiced (a credit note flow is not built; the ledger holds the credit). Raises
    SettlementStateError for a draft, disputed or void settlement, InvoicingInProgress while
    another worker holds the claim, and the gateway's errors (the claim is then released)."""
    if connection.in_atomic_block:
        raise RuntimeError("settlement_invoice calls Stripe: call it outside any transaction")
    fresh = Settlement.objects.select_related("host", "licensor").get(pk=settlement.pk)
    if fresh.status in (SettlementStatus.INVOICED, SettlementStatus.PAID):
        return fresh
    if fresh.status != SettlementStatus.APPROVED:
        raise SettlementStateError(fresh, "invoice")
    if _minor(fresh.total, fresh.currency) <= 0:
        logger.info("settlement %s totals %s: not invoiced", fresh.pk, fresh.total_display)
        return fresh

    # The claim (a conditional update, committed at once): a redelivered task, the hourly sweep
    # and an operator's "Send invoice" may all reach this settlement; only the holder of the
    # claim calls Stripe, so two of them never race on the same idempotency keys. A claim older
    # than the lease is a dead worker's and is taken over.
    started = timezone.now()
    claimed = (
        Settlement.objects.filter(
            pk=fresh.pk, status=SettlementStatus.APPROVED, stripe_invoice_id__isnull=True
        )
        .filter(
            Q(invoicing_started_at__isnull=True)
            | Q(invoicing_started_at__lt=started - INVOICING_LEASE)
        )
        .update(invoicing_started_at=started)
    )
    if not claimed:
        fresh.refresh_from_db()
        if fresh.status in (SettlementStatus.INVOICED, SettlementStatus.PAID):
            return fresh
        raise InvoicingInProgress(fresh, "invoice (another attempt is running)")

    try:
        sent = stripe_gateway.invoice_send(
            settlement_id=str(fresh.pk),
            host=fresh.host,
            currency=fresh.currency,
            description=(
                f"{fresh.licensor.name}: model licensing for {fresh.period} "
                f"(Tollgate settlement {fresh.pk})"
            ),
            lines=invoice_lines(fresh),
            days_until_due=settings.STRIPE_DAYS_UNTIL_DUE,
        )
    except Exception as exc:
        # Released at once so that a retry needs not wait for the lease; only our own claim.
        Settlement.objects.filter(pk=fresh.pk, invoicing_started_at=started).update(
            invoicing_started_at=None, invoice_error=f"{type(exc).__name__}: {exc}"[:5000]
        )
        raise

    with transaction.atomic(durable=True):
        recorded = Settlement.objects.filter(
            pk=fresh.pk, status=SettlementStatus.APPROVED, stripe_invoice_id__isnull=True
        ).update(
            status=SettlementStatus.INVOICED,
            stripe_invoice_id=sent.id,
            invoiced_at=timezone.now(),
            invoicing_started_at=None,
            invoice_error="",
            updated_at=timezone.now(),
        )
        if recorded:
            settlement_event(Settlement.objects.get(pk=fresh.pk), "settlement.invoiced")
            settlement_event_record(
                settlement=fresh, actor=SYSTEM, action="invoiced", detail={"invoice": sent.id}
            )
    fresh.refresh_from_db()
    if not recorded and fresh.stripe_invoice_id != sent.id:
        # Voided meanwhile, most likely: the Stripe invoice needs an operator (void it there).
        logger.error(
            "settlement %s is %s with invoice %s; Stripe invoice %s was sent for it",
            fresh.pk,
            fresh.status,
            fresh.stripe_invoice_id,
            sent.id,
        )
    return fresh


# --- webhooks --------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def stripe_event_process(*, event: dict[str, Any], charge_invoice: str | None = None) -> str | None:
    """Apply one verified Stripe event, once. Returns what it did, or None for an event already
    processed (a duplicate delivery: nothing is done again).

    The event's row is inserted first, ON CONFLICT DO NOTHING, in the same transaction as its
    effects: the unique event id is the idempotency. Two concurrent deliveries of one event wait
    on that index; the second finds the row and returns None. A failure rolls back the row too,
    so Stripe's next delivery processes the event again. `charge_invoice`: for
    `charge.refunded`, the invoice the charge paid (found on Stripe by the caller, outside this
    transaction: stripe_gateway.invoice_of_charge)."""
    obj = (event.get("data") or {}).get("object") or {}
    event_type = str(event.get("type", ""))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_stripeevent (event_id, type, object_id, outcome, received_at,"
            " processed_at) VALUES (%s, %s, %s, '', now(), now())"
            " ON CONFLICT (event_id) DO NOTHING RETURNING id",
            [str(event["id"]), event_type[:100], str(obj.get("id", ""))[:255]],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    if event_type in PAID_EVENT_TYPES and obj.get("object") == "invoice":
        outcome = _invoice_paid(event_id=row[0], invoice=obj)
    elif event_type == "transfer.reversed" and obj.get("object") == "transfer":
        outcome = transfer_reversed_post(transfer=obj)  # a payout's transfer (docs/payouts.md)
        StripeEvent.objects.filter(pk=row[0]).update(outcome=outcome[:200])
    elif event_type == "charge.refunded" and obj.get("object") == "charge":
        outcome = charge_refunded_post(event_id=row[0], charge=obj, invoice_id=charge_invoice)
    else:
        outcome = "ignored: not an event Tollgate acts on"
        StripeEvent.objects.filter(pk=row[0]).update(outcome=outcome)
    logger.info("stripe event %s (%s): %s", event["id"], event_type, outcome)
    return outcome


def _settlement_for_invoice(invoice: dict[str, Any]) -> Settlement | None:
    # FOR UPDATE: the invoicing service's own record of this invoice (approved -> invoiced) and
    # this payment serialize on the row, whichever commits first.
    locked = Settlement.objects.select_for_update(of=("self",)).select_related("host", "licensor")
    found = locked.filter(stripe_invoice_id=invoice["id"]).first()
    if found is not None:
        return found
    # Paid before our own record of the invoice committed (or that commit was lost): the
    # metadata we put on every invoice names the settlement.
    settlement_id = (invoice.get("metadata") or {}).get("tollgate_settlement")
    try:
        return locked.filter(pk=uuid.UUID(str(settlement_id))).first()
    except ValueError:
        return None


def invoice_mismatch(*, invoice: dict[str, Any], settlement: Settlement) -> str:
    """What in a paid invoice differs from the invoice we sent for the settlement ("" when
    nothing does): its id (once we know ours), the amount paid and its total in minor units, the
    currency, and the customer (the host's). A signed event proves only that Stripe sent it, not
    that it is our invoice: anyone who can create an invoice in the account (a dashboard user, an
    integration sharing it) can put our settlement's id in its metadata and pay a cent."""
    expected_minor = _minor(settlement.total, settlement.currency)
    problems = []
    if settlement.stripe_invoice_id not in (None, invoice.get("id")):
        problems.append(f"invoice {invoice.get('id')} != {settlement.stripe_invoice_id}")
    for field in ("amount_paid", "total"):
        value = invoice.get(field)
        if field == "total" and value is None:
            continue  # amount_paid is what was paid; total only cross-checks it when present
        if not isinstance(value, int) or isinstance(value, bool) or value != expected_minor:
            shown = "(none)" if value is None else value
            problems.append(f"{field} {shown} != {expected_minor}")
    currency = str(invoice.get("currency") or "").upper()
    if currency != settlement.currency:
        problems.append(f"currency {currency or '(none)'} != {settlement.currency}")
    customer = invoice.get("customer")
    if isinstance(customer, dict):  # an expanded customer object
        customer = customer.get("id")
    expected_customer = settlement.host.stripe_customer_id
    if not expected_customer or customer != expected_customer:
        problems.append(f"customer {customer or '(none)'} != {expected_customer or '(none)'}")
    return "; ".join(problems)


def _invoice_paid(*, event_id: int, invoice: dict[str, Any]) -> str:
    def done(outcome: str, **fields: Any) -> str:
        StripeEvent.objects.filter(pk=event_id).update(outcome=outcome[:200], **fields)
        return outcome

    settlement = _settlement_for_invoice(invoice)
    if settlement is None:
        logger.warning("stripe invoice %s paid: no settlement of ours", invoice["id"])
        return done("ignored: unknown invoice")
    mismatch = invoice_mismatch(invoice=invoice, settlement=settlement)
    if mismatch:
        # Recorded for operators (the admin's Stripe events), acknowledged to Stripe (a
        # redelivery would not change it), and neither posted nor moving the settlement.
        logger.error(
            "stripe invoice %s paid, but it is not settlement %s's invoice: %s",
            invoice["id"],
            settlement.pk,
            mismatch,
        )
        return done(
            f"mismatch: settlement {settlement.pk} not paid",
            settlement=settlement,
            mismatch=mismatch,
        )
    StripeEvent.objects.filter(pk=event_id).update(settlement=settlement)
    if settlement.status == SettlementStatus.PAID:
        return done(f"settlement {settlement.pk} was already paid")
    now = timezone.now()
    if settlement.status == SettlementStatus.APPROVED:
        Settlement.objects.filter(pk=settlement.pk).update(
            status=SettlementStatus.INVOICED,
            stripe_invoice_id=invoice["id"],
            invoiced_at=now,
            invoicing_started_at=None,
            updated_at=now,
        )
        invoiced = {"invoice": invoice["id"]}
        settlement_event_record(
            settlement=settlement, actor=SYSTEM, action="invoiced", detail=invoiced
        )
    elif settlement.status != SettlementStatus.INVOICED:
        logger.error(
            "stripe invoice %s paid, settlement %s is %s",
            invoice["id"],
            settlement.pk,
            settlement.status,
        )
        return done(f"ignored: settlement {settlement.pk} is {settlement.status}")
    Settlement.objects.filter(pk=settlement.pk, status=SettlementStatus.INVOICED).update(
        status=SettlementStatus.PAID, paid_at=now, updated_at=now
    )
    settlement_event(Settlement.objects.get(pk=settlement.pk), "settlement.paid")
    settlement_event_record(
        settlement=settlement, actor=SYSTEM, action="paid", detail={"invoice": invoice["id"]}
    )
    outcome = done(f"settlement {settlement.pk} paid")
    # Last in the transaction: posting takes the ledger's chain lock, held until commit. What the
    # host owes is what we invoiced (checked equal to amount_paid above): the settlement's total,
    # posted with its withholding by the one definition bank transfers use too.
    settlement_paid_post(
        settlement=settlement,
        payment_id=invoice["id"],
        memo=(
            f"Stripe invoice {invoice['id']} paid: settlement "
            f"{settlement.licensor.slug}/{settlement.host.slug} {settlement.period}"
        ),
    )
    return outcome


__all__ = [
    "INVOICING_LEASE",
    "invoice_lines",
    "invoice_mismatch",
    "settlement_invoice",
    "stripe_event_process",
]
