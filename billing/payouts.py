"""Money reaches the licensor (docs/payouts.md): the host's payment of a settlement, the platform
fee and the withholding it bears, and payouts on two rails.

    settlement approved ─ accrual (review.py): host receivable / licensor payable + platform fee
    host pays (Stripe invoice.paid, or record_host_payment for a bank transfer)
        └─ settlement_paid_post: cash / receivable; licensor payable / tax payable (withholding);
           a PayableSettlement row: the settlement now counts toward a payout
    run_payouts (command, monthly beat) ─ payout_make per (licensor, currency, day)
        ├─ manual: pending until an operator records the bank reference (payout_mark_paid)
        └─ stripe_connect: payout_send, a Stripe transfer outside any transaction, then paid
    paid ─ licensor payable / cash (ledger.services.licensor_payout_post)

Amounts are signed integers of the currency's minor unit (cents) unless they are `Decimal`
settlement totals (major units). Every transition of a payout goes through `_payout_event`,
the one place an outbound webhook of it is emitted.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing import events, stripe_gateway
from billing.history import SYSTEM, settlement_event_record
from billing.models import (
    PayableSettlement,
    Payout,
    PayoutAdjustment,
    PayoutStatus,
    Settlement,
    SettlementStatus,
)
from core.money import from_minor_units, quantize, to_minor_units, whole_units
from ledger.models import AccountKind, Posting
from ledger.services import (
    PostingSpec,
    account_for,
    host_payment_post,
    journal_post,
    licensor_payout_post,
)
from licensing.models import Licensor

logger = logging.getLogger(__name__)

# A transfer attempt older than this is a dead worker's: the next run may take it over (and first
# looks for the transfer that worker may have made).
SENDING_LEASE = dt.timedelta(minutes=15)


class PaymentError(ValueError):
    """A host payment or a payout that cannot be recorded: `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- fee and withholding (pure) ----------------------------------------------------------------


def fee_percent(licensor: Licensor) -> Decimal:
    """The licensor's platform fee percent, else the platform's default."""
    if licensor.payout_platform_fee_percent is not None:
        return Decimal(licensor.payout_platform_fee_percent)
    return Decimal(settings.TOLLGATE_PLATFORM_FEE_PERCENT or "0")


@dataclass(frozen=True)
class Split:
    """A settlement total split three ways, in minor units: fee + withholding + net = total."""

    fee: int
    withholding: int
    net: int


def payout_split(total_minor: int, fee_pct: Decimal, withholding_pct: Decimal) -> Split:
    """fee = total x fee%, withholding = (total - fee) x withholding%, each rounded half up to the
    minor unit once (on the magnitude: a negative total splits as the mirror of a positive one);
    net is what is left, so the three always add up to the total exactly."""
    sign = -1 if total_minor < 0 else 1
    magnitude = abs(total_minor)
    fee = whole_units(Decimal(magnitude) * fee_pct / 100)
    withholding = whole_units(Decimal(magnitude - fee) * withholding_pct / 100)
    return Split(
        fee=sign * fee, withholding=sign * withholding, net=sign * (magnitude - fee - withholding)
    )


def platform_fee_minor(*, amount_minor: int, licensor: Licensor) -> int:
    """The platform fee of an approved settlement of `amount_minor` (> 0): what approval posts to
    platform revenue (billing/review.py)."""
    return payout_split(amount_minor, fee_percent(licensor), Decimal(0)).fee


# --- the host pays -----------------------------------------------------------------------------


def _minor(settlement: Settlement) -> int:
    return to_minor_units(quantize(settlement.total, settlement.currency), settlement.currency)


def _posted_fee_minor(settlement: Settlement, which: str) -> int:
    """The fee approval posted for the settlement (entry `settlement:<id>:<which>`), as a
    magnitude: the ledger, not today's percent, says what the platform took."""
    total = Posting.objects.filter(
        entry__idempotency_key=f"settlement:{settlement.pk}:{which}",
        account__kind=AccountKind.PLATFORM_REVENUE,
    ).aggregate(total=Sum("amount"))["total"]
    return abs(int(total or 0))


def _withholding_post(settlement: Settlement, withholding_minor: int) -> None:
    """Withholding on a paid settlement (> 0: debit the licensor's payable, credit tax payable)
    or given back on a negative settlement's credit (< 0: the mirror). Key per settlement."""
    if not withholding_minor:
        return
    payable = account_for(
        owner=settlement.licensor, kind=AccountKind.PAYABLE, currency=settlement.currency
    )
    tax = account_for(owner=None, kind=AccountKind.TAX_PAYABLE, currency=settlement.currency)
    journal_post(
        idempotency_key=f"settlement:{settlement.pk}:withholding",
        memo=f"Withholding on settlement {settlement.licensor.slug}/{settlement.host.slug} "
        f"{settlement.period}",
        postings=[
            PostingSpec(account=payable, amount_minor=withholding_minor),
            PostingSpec(account=tax, amount_minor=-withholding_minor),
        ],
        reference_type="settlement",
        reference_id=str(settlement.pk),
    )


def settlement_paid_post(*, settlement: Settlement, payment_id: str, memo: str) -> None:
    """The host paid the settlement's full total (inside the caller's transaction, with the
    settlement row locked and already moved to `paid`): post the payment and the withholding,
    and make the settlement payable to its licensor. One definition for both ways a host pays
    (the Stripe webhook and `record_host_payment`)."""
    amount_minor = _minor(settlement)
    fee = _posted_fee_minor(settlement, "accrual")
    withholding = payout_split(
        amount_minor - fee, Decimal(0), Decimal(settlement.licensor.payout_withholding_percent)
    ).withholding
    PayableSettlement.objects.create(
        settlement=settlement,
        licensor=settlement.licensor,
        currency=settlement.currency,
        gross_minor=amount_minor,
        platform_fee_minor=fee,
        withholding_minor=withholding,
    )
    # Last in the transaction: posting takes the ledger's chain lock, held until commit.
    host_payment_post(
        payment_id=payment_id,
        host=settlement.host,
        currency=settlement.currency,
        amount_minor=amount_minor,
        memo=memo,
    )
    _withholding_post(settlement, withholding)


@transaction.atomic(durable=True)
def host_payment_record(
    *, settlement_id: str, reference: str, amount: Decimal | None = None
) -> Settlement:
    """A host's bank transfer of a settlement's full total: `approved` (or `invoiced`, paid
    outside Stripe) → `paid`, posted like a Stripe payment. Anything else (no reference, another
    amount, a settlement not approved or invoiced, one already paid) raises PaymentError and
    writes nothing."""
    reference = (reference or "").strip()
    if not reference or len(reference) > 200:
        raise PaymentError("reference", "the bank reference is required (1 to 200 characters)")
    try:
        pk = uuid.UUID(str(settlement_id))
    except ValueError:
        raise PaymentError("settlement", f"{settlement_id!r} is not a settlement id") from None
    # FOR UPDATE: a Stripe payment of the same settlement (the webhook) waits for this one and
    # then finds it paid, so the host's money is posted once.
    settlement = (
        Settlement.objects.select_for_update(of=("self",))
        .select_related("host", "licensor")
        .filter(pk=pk)
        .first()
    )
    if settlement is None:
        raise PaymentError("settlement", f"no settlement {settlement_id}")
    if settlement.status == SettlementStatus.PAID:
        raise PaymentError("settlement", f"settlement {settlement.pk} is already paid")
    if settlement.status not in (SettlementStatus.APPROVED, SettlementStatus.INVOICED):
        raise PaymentError(
            "settlement",
            f"settlement {settlement.pk} is {settlement.status}: only an approved or invoiced "
            "settlement can be paid",
        )
    if _minor(settlement) <= 0:
        raise PaymentError("settlement", f"settlement {settlement.pk} has nothing to pay")
    if amount is not None and quantize(amount, settlement.currency) != quantize(
        settlement.total, settlement.currency
    ):
        raise PaymentError(
            "amount",
            f"{amount} is not the settlement's total {settlement.total_display} "
            f"{settlement.currency}: only a payment of the full total is recorded",
        )
    now = timezone.now()
    Settlement.objects.filter(pk=settlement.pk, status=settlement.status).update(
        status=SettlementStatus.PAID, paid_at=now, payment_reference=reference, updated_at=now
    )
    settlement.refresh_from_db()
    settlement_event_record(
        settlement=settlement, actor=SYSTEM, action="paid", detail={"reference": reference}
    )
    events.settlement_event(settlement, "settlement.paid")
    settlement_paid_post(
        settlement=settlement,
        payment_id=f"bank:{settlement.pk}",
        memo=f"Bank transfer {reference}: settlement {settlement.licensor.slug}/"
        f"{settlement.host.slug} {settlement.period}",
    )
    return settlement


# --- negative settlements ------------------------------------------------------------------------


@transaction.atomic(durable=True)
def _credit_carry(settlement_id: str) -> None:
    """An approved settlement with a negative total (its credit was posted at approval): its
    licensor's share, less the withholding given back, is carried into the next payout."""
    settlement = (
        Settlement.objects.select_for_update(of=("self",))
        .select_related("host", "licensor")
        .get(pk=settlement_id)
    )
    source = f"settlement:{settlement.pk}:credit"
    if PayoutAdjustment.objects.filter(source=source).exists():
        return
    amount_minor = _minor(settlement)  # < 0
    fee = _posted_fee_minor(settlement, "credit")
    withholding = payout_split(
        amount_minor + fee, Decimal(0), Decimal(settlement.licensor.payout_withholding_percent)
    ).withholding  # <= 0
    PayoutAdjustment.objects.create(
        licensor=settlement.licensor,
        currency=settlement.currency,
        amount_minor=amount_minor + fee - withholding,
        source=source,
        description=f"credit of settlement {settlement.host.slug} {settlement.period}",
    )
    _withholding_post(settlement, withholding)


# --- payouts -------------------------------------------------------------------------------------


def _payout_event(payout: Payout, event_type: str) -> None:
    """The one place each payout transition is announced (`payout.created`, `payout.paid`,
    `payout.failed`), inside the transaction that made it."""
    logger.info("%s %s (%s %s)", event_type, payout.pk, payout.net_minor, payout.currency)
    renderer = events.payout_renderer
    if renderer is None:
        raise RuntimeError("billing's AppConfig did not register the payout renderer")
    events.event_emit(
        type=event_type,
        licensor=payout.licensor_id,
        host=None,
        object_id=str(payout.pk),
        data=lambda: renderer(payout),
    )


def minimum_minor(licensor: Licensor, currency: str) -> int:
    raw = (licensor.payout_minimum or {}).get(currency, "0")
    return to_minor_units(quantize(Decimal(str(raw)), currency), currency)


@transaction.atomic(durable=True)
def payout_make(*, licensor_id: int, currency: str, day: dt.date) -> Payout | None:
    """The licensor's payout of `day` in `currency`: every paid settlement not yet in a payout and
    every carried amount, when their net reaches the licensor's minimum. None when there is
    already one that day, or when the net falls short (then everything waits for a later run)."""
    # FOR UPDATE on the licensor: two runs at once (beat and an operator's command) serialize
    # here, so neither takes the settlements the other is taking; the unique constraint on
    # (licensor, currency, day) is the database's last word.
    licensor = Licensor.objects.select_for_update().get(pk=licensor_id)
    if Payout.objects.filter(licensor=licensor, currency=currency, day=day).exists():
        return None
    items = list(
        PayableSettlement.objects.filter(licensor=licensor, currency=currency, payout__isnull=True)
    )
    adjustments = list(
        PayoutAdjustment.objects.filter(licensor=licensor, currency=currency, payout__isnull=True)
    )
    gross = sum(i.gross_minor for i in items)
    fee = sum(i.platform_fee_minor for i in items)
    withholding = sum(i.withholding_minor for i in items)
    carried = sum(a.amount_minor for a in adjustments)
    net = gross - fee - withholding + carried
    if net <= 0 or net < minimum_minor(licensor, currency):
        return None
    try:
        with transaction.atomic():
            payout = Payout.objects.create(
                licensor=licensor,
                currency=currency,
                day=day,
                rail=licensor.payout_rail,
                stripe_account=licensor.payout_stripe_account,
                gross_minor=gross,
                platform_fee_minor=fee,
                withholding_minor=withholding,
                carried_forward_minor=carried,
                net_minor=net,
            )
    except IntegrityError:
        return None  # another run made the day's payout
    PayableSettlement.objects.filter(pk__in=[i.pk for i in items]).update(payout=payout)
    PayoutAdjustment.objects.filter(pk__in=[a.pk for a in adjustments]).update(payout=payout)
    _payout_event(payout, "payout.created")
    return payout


@transaction.atomic(durable=True)
def payout_mark_paid(*, payout_id: str, reference: str) -> Payout:
    """The payout reached the licensor (an operator's bank reference, or the Stripe transfer id):
    pending → paid, and the ledger's payable goes down by the net, once."""
    reference = (reference or "").strip()
    if not reference or len(reference) > 200:
        raise PaymentError("reference", "the reference is required (1 to 200 characters)")
    # FOR UPDATE (the payout row only): an operator's click and a transfer's record, or two
    # clicks, serialize here, so the payout is posted once.
    payout = (
        Payout.objects.select_for_update(of=("self",)).select_related("licensor").get(pk=payout_id)
    )
    if payout.status == PayoutStatus.PAID:
        if payout.reference == reference:
            return payout
        raise PaymentError("payout", f"payout {payout.pk} is already paid ({payout.reference})")
    if payout.status != PayoutStatus.PENDING:
        raise PaymentError("payout", f"payout {payout.pk} is {payout.status}")
    payout.status = PayoutStatus.PAID
    payout.reference = reference
    payout.paid_at = timezone.now()
    payout.save(update_fields=["status", "reference", "paid_at"])
    _payout_event(payout, "payout.paid")
    licensor_payout_post(
        payout_id=str(payout.pk),
        licensor=payout.licensor,
        currency=payout.currency,
        amount_minor=payout.net_minor,
        memo=f"Payout {payout.pk} to {payout.licensor.slug} ({payout.rail}, {reference})",
    )
    return payout


@transaction.atomic(durable=True)
def payout_fail(*, payout_id: str, error: str) -> Payout:
    """The payout could not be made: pending → failed, and its net is carried into the next
    payout (nothing was posted for it, so the ledger's payable still holds it)."""
    # FOR UPDATE: a failure and a record of the same payout cannot both win.
    payout = Payout.objects.select_for_update().get(pk=payout_id)
    if payout.status != PayoutStatus.PENDING:
        return payout
    payout.status = PayoutStatus.FAILED
    payout.error = error[:2000]
    payout.failed_at = timezone.now()
    payout.sending_started_at = None
    payout.save(update_fields=["status", "error", "failed_at", "sending_started_at"])
    PayoutAdjustment.objects.create(
        licensor_id=payout.licensor_id,
        currency=payout.currency,
        amount_minor=payout.net_minor,
        source=f"payout:{payout.pk}:failed",
        description=f"payout {payout.pk} failed",
    )
    _payout_event(payout, "payout.failed")
    return payout


def payout_send(*, payout: Payout) -> Payout:
    """Send a pending stripe_connect payout: a Stripe transfer of the net to the licensor's
    connected account, outside any transaction, then recorded paid. Safe to repeat: the claim
    keeps two workers from calling Stripe at once, and the gateway first looks for the transfer
    a crashed attempt made (by transfer_group and metadata) before creating one."""
    if connection.in_atomic_block:
        raise RuntimeError("payout_send calls Stripe: never inside a transaction")
    now = timezone.now()
    claimed = (
        Payout.objects.filter(pk=payout.pk, status=PayoutStatus.PENDING, rail="stripe_connect")
        .filter(Q(sending_started_at__isnull=True) | Q(sending_started_at__lt=now - SENDING_LEASE))
        .update(sending_started_at=now)
    )
    if not claimed:
        return Payout.objects.get(pk=payout.pk)
    try:
        transfer_id = stripe_gateway.transfer_ensure(
            payout_id=str(payout.pk),
            account=payout.stripe_account,
            amount_minor=payout.net_minor,
            currency=payout.currency,
        )
    except stripe_gateway.TRANSIENT_ERRORS as exc:
        # Stripe may or may not hold the transfer: release the claim, the next run looks first.
        Payout.objects.filter(pk=payout.pk).update(sending_started_at=None, error=str(exc)[:2000])
        raise
    except stripe_gateway.StripeError as exc:
        return payout_fail(payout_id=str(payout.pk), error=str(exc))
    except stripe_gateway.StripeInvoiceMismatch as exc:
        # Stripe holds a transfer for this payout that is not the one we meant: money may have
        # moved, so the payout neither fails nor is paid; an operator decides (the error shows).
        logger.error("payout %s: %s", payout.pk, exc)
        Payout.objects.filter(pk=payout.pk).update(error=str(exc)[:2000])
        return Payout.objects.get(pk=payout.pk)
    return payout_record_transfer(payout_id=str(payout.pk), transfer_id=transfer_id)


def payout_record_transfer(*, payout_id: str, transfer_id: str) -> Payout:
    """Record the transfer Stripe made (a separate step, so that a crash between Stripe and this
    commit is exactly what the next attempt heals)."""
    return payout_mark_paid(payout_id=payout_id, reference=transfer_id)


def transfer_reversed_post(*, transfer: dict[str, Any]) -> str:
    """Stripe's `transfer.reversed` for a payout's transfer (inside the webhook's transaction,
    which makes each event count once): the money came back from the licensor's connected
    account, so the platform owes it again. Debit cash, credit the licensor's payable, and carry
    the amount into the next payout. `amount_reversed` is cumulative on Stripe: only what is new
    since the reversals already recorded is posted, whatever order or number of events. Returns
    what it did."""
    transfer_id = str(transfer.get("id") or "")
    # FOR UPDATE: two reversal events of one transfer serialize here.
    payout = (
        Payout.objects.select_for_update(of=("self",))
        .select_related("licensor")
        .filter(reference=transfer_id, rail="stripe_connect")
        .first()
    )
    if payout is None or not transfer_id:
        return "ignored: not a payout's transfer"
    total = transfer.get("amount_reversed")
    if not isinstance(total, int) or isinstance(total, bool) or not 0 <= total <= payout.net_minor:
        return f"mismatch: payout {payout.pk}: amount_reversed {total!r}"
    prefix = f"transfer:{transfer_id}:reversed:"
    already = sum(
        PayoutAdjustment.objects.filter(source__startswith=prefix).values_list(
            "amount_minor", flat=True
        )
    )
    new = total - already
    if new <= 0:
        return f"payout {payout.pk}: reversal already recorded"
    PayoutAdjustment.objects.create(
        licensor=payout.licensor,
        currency=payout.currency,
        amount_minor=new,
        source=f"{prefix}{total}",
        description=f"transfer {transfer_id} of payout {payout.pk} reversed",
    )
    cash = account_for(owner=None, kind=AccountKind.CASH, currency=payout.currency)
    payable = account_for(owner=payout.licensor, kind=AccountKind.PAYABLE, currency=payout.currency)
    journal_post(
        idempotency_key=f"{prefix}{total}",
        memo=f"Transfer {transfer_id} of payout {payout.pk} reversed: {new} back",
        postings=[
            PostingSpec(account=cash, amount_minor=new),
            PostingSpec(account=payable, amount_minor=-new),
        ],
        reference_type="payout",
        reference_id=str(payout.pk),
    )
    return f"payout {payout.pk}: {new} reversed, carried forward"


def run_payouts(*, as_of: dt.date) -> list[Payout]:
    """Every licensor's payout of `as_of` in every currency with something to pay, then the
    transfers of pending stripe_connect payouts (this run's, and any an earlier run left)."""
    negatives = Settlement.objects.filter(status=SettlementStatus.APPROVED, total__lt=0).exclude(
        pk__in=_carried_settlement_ids()
    )
    for settlement_id in negatives.values_list("pk", flat=True):
        _credit_carry(str(settlement_id))
    keys = set(
        PayableSettlement.objects.filter(payout__isnull=True).values_list("licensor_id", "currency")
    ) | set(
        PayoutAdjustment.objects.filter(payout__isnull=True).values_list("licensor_id", "currency")
    )
    made = []
    for licensor_id, currency in sorted(keys):
        payout = payout_make(licensor_id=licensor_id, currency=currency, day=as_of)
        if payout is not None:
            made.append(payout)
    pending = Payout.objects.filter(
        status=PayoutStatus.PENDING, rail="stripe_connect", reference__isnull=True
    ).order_by("created_at")
    if pending.exists() and stripe_gateway.is_configured():
        for payout in pending:
            try:
                payout_send(payout=payout)
            except stripe_gateway.TRANSIENT_ERRORS:
                logger.warning("payout %s: Stripe unavailable, retried next run", payout.pk)
    return [Payout.objects.get(pk=p.pk) for p in made]


def _carried_settlement_ids() -> Sequence[str]:
    sources = PayoutAdjustment.objects.filter(source__startswith="settlement:").values_list(
        "source", flat=True
    )
    return [s.split(":")[1] for s in sources]


def money(amount_minor: int, currency: str) -> Decimal:
    return from_minor_units(amount_minor, currency)


__all__ = [
    "PaymentError",
    "Split",
    "fee_percent",
    "host_payment_record",
    "payout_fail",
    "payout_make",
    "payout_mark_paid",
    "payout_send",
    "payout_split",
    "platform_fee_minor",
    "run_payouts",
    "settlement_paid_post",
    "transfer_reversed_post",
]
