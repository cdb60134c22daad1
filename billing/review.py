"""The licensor's review of a settlement: approve or dispute a draft, and what follows.

    draft --settlement_approve--> approved (accrual posted to the ledger; Stripe invoice queued)
    draft --settlement_dispute--> disputed (settled as it is, nothing posted)

Either decision closes the month for late usage (docs/billing.md). Both are conditional updates
from `draft`: of two concurrent decisions exactly one wins.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import aggregation
from billing.errors import SettlementStateError
from billing.models import PendingRerate, Settlement, SettlementStatus
from billing.payouts import platform_fee_minor
from billing.tasks import settlement_invoice
from core.money import quantize, to_minor_units
from ledger.services import settlement_accrual_post, settlement_credit_post
from usage.services import period_close


def _close_and_check(settlement: Settlement) -> None:
    """Close the month for late usage, then look for records that arrived while the draft waited
    (not late, since the month was still open, and not in the draft): the next run re-rates the
    month with them. period_close waits for in-flight ingest batches of the host, so after it
    every record of the month is either counted here or marked late."""
    period_close(host=settlement.host, licensor=settlement.licensor, period=settlement.period)
    rated = sum(
        Settlement.objects.filter(
            host_id=settlement.host_id,
            licensor_id=settlement.licensor_id,
            period=settlement.period,
        )
        .exclude(status=SettlementStatus.VOID)
        .values_list("record_count", flat=True)
    )
    there = aggregation.count_records(
        host_id=settlement.host_id, licensor_id=settlement.licensor_id, period=settlement.period
    )
    if there != rated:
        PendingRerate.objects.get_or_create(
            host_id=settlement.host_id,
            licensor_id=settlement.licensor_id,
            period=settlement.period,
        )


def _claim(settlement: Settlement, *, to: str, action: str, **fields: Any) -> Settlement | None:
    """Move a draft to `to` with a conditional update: of two concurrent decisions, exactly one
    wins; the other sees the winner's status. Returns the updated row, or None when it already
    had status `to` (an idempotent retry)."""
    claimed = Settlement.objects.filter(pk=settlement.pk, status=SettlementStatus.DRAFT).update(
        status=to, decided_by=fields.pop("actor"), updated_at=timezone.now(), **fields
    )
    fresh = Settlement.objects.select_related("host", "licensor").get(pk=settlement.pk)
    if claimed:
        return fresh
    if fresh.status == to:
        return None
    raise SettlementStateError(fresh, action)


@transaction.atomic(durable=True)
def settlement_approve(*, settlement: Settlement, actor: str) -> Settlement:
    """The licensor accepts the settlement: it is settled, the month is closed for late usage,
    and the accrual (host receivable / licensor payable) is posted to the ledger, once."""
    fresh = _claim(
        settlement,
        to=SettlementStatus.APPROVED,
        action="approve",
        actor=actor,
        approved_at=timezone.now(),
    )
    if fresh is None:
        return Settlement.objects.get(pk=settlement.pk)
    _close_and_check(fresh)
    amount_minor = to_minor_units(quantize(fresh.total, fresh.currency), fresh.currency)
    if amount_minor:
        # A negative total (late corrections took back more than the month added) is a credit
        # to the host: the mirror entry. A zero total posts nothing (no zero amounts).
        post = settlement_accrual_post if amount_minor > 0 else settlement_credit_post
        # Last in the transaction: posting takes the ledger's chain lock, held until commit.
        post(
            settlement_id=str(fresh.pk),
            host=fresh.host,
            licensor=fresh.licensor,
            currency=fresh.currency,
            amount_minor=abs(amount_minor),
            platform_fee_minor=platform_fee_minor(
                amount_minor=abs(amount_minor), licensor=fresh.licensor
            ),
            memo=f"Settlement {fresh.licensor.slug}/{fresh.host.slug} {fresh.period} approved",
        )
    if amount_minor > 0 and settings.STRIPE_API_KEY:
        _queue_invoice(str(fresh.pk))
    return fresh


def _queue_invoice(settlement_id: str) -> None:
    """Invoice through Stripe once the approval is committed (docs/stripe.md); without
    STRIPE_API_KEY approval stops at `approved`. robust: in-process (eager) Celery runs the task
    right here, and a Stripe failure must not turn a committed approval into an error; the
    hourly sweep and the admin's "Send invoice" retry it."""
    transaction.on_commit(lambda: settlement_invoice.delay(settlement_id), robust=True)


@transaction.atomic(durable=True)
def settlement_dispute(*, settlement: Settlement, reason: str, actor: str) -> Settlement:
    """The licensor contests the settlement: it is settled as it is (nothing is posted), with the
    reason on record; the month is closed, so later usage is billed as adjustments."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a dispute needs a reason")
    fresh = _claim(
        settlement,
        to=SettlementStatus.DISPUTED,
        action="dispute",
        actor=actor,
        disputed_at=timezone.now(),
        dispute_reason=reason,
    )
    if fresh is None:
        return Settlement.objects.get(pk=settlement.pk)
    _close_and_check(fresh)
    return fresh


__all__ = ["settlement_approve", "settlement_dispute"]
