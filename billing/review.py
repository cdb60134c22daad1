"""The licensor's review of a settlement: approve or dispute a draft, the host's answer, and what
follows (docs/billing.md, "Review, disputes and their resolution").

    draft    --settlement_approve--> approved (accrual posted to the ledger; Stripe invoice queued)
    disputed --settlement_approve--> approved (the licensor accepts after all; the same)
    draft    --settlement_dispute--> disputed (nothing posted; the month stays open)
    disputed --settlement_respond--> disputed (the host's answer, on record)
    disputed --a billing run-------> superseded, by a revision (billing/revisions.py)

Approval closes the month for late usage. Every decision is a conditional update from the statuses
that allow it: of two concurrent decisions exactly one wins, the other is `invalid_state`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import aggregation
from billing.errors import SettlementStateError
from billing.events import settlement_event
from billing.history import SYSTEM, settlement_event_record
from billing.models import (
    DISPUTE_REASON_CODES,
    NOT_CURRENT_STATUSES,
    PendingRerate,
    Settlement,
    SettlementStatus,
)
from billing.payouts import platform_fee_minor
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
        .exclude(status__in=NOT_CURRENT_STATUSES)
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


def _claim(
    settlement: Settlement,
    *,
    allowed: tuple[str, ...],
    to: str,
    action: str,
    due_by: datetime | None = None,
    **fields: Any,
) -> Settlement:
    """Move a settlement from one of the `allowed` statuses to `to` with a conditional update: of
    two concurrent decisions exactly one wins, the other raises SettlementStateError. A billing
    run revising the same disputed settlement holds its row FOR UPDATE: this UPDATE waits for
    the run's commit, then finds it superseded and changes nothing."""
    claim = Settlement.objects.filter(pk=settlement.pk, status__in=allowed)
    if due_by is not None:
        claim = claim.filter(review_due_at__lte=due_by)
    claimed = claim.update(status=to, updated_at=timezone.now(), **fields)
    fresh = Settlement.objects.select_related("host", "licensor").get(pk=settlement.pk)
    if not claimed:
        raise SettlementStateError(fresh, action)
    return fresh


@transaction.atomic(durable=True)
def settlement_approve(
    *, settlement: Settlement, actor: str, deemed_as_of: datetime | None = None
) -> Settlement:
    """The licensor accepts the settlement (a draft, or a disputed one after all), or, with
    `deemed_as_of`, a draft's review window ended by then (billing/deeming.py): it is settled,
    the month is closed for late usage, and the accrual (host receivable / licensor payable) is
    posted to the ledger, once. Approving an approved settlement is SettlementStateError (the
    API's 409 `invalid_state`)."""
    deemed = deemed_as_of is not None
    fresh = _claim(
        settlement,
        allowed=(SettlementStatus.DRAFT,)
        if deemed
        else (SettlementStatus.DRAFT, SettlementStatus.DISPUTED),
        due_by=deemed_as_of,
        to=SettlementStatus.APPROVED,
        action="approve",
        decided_by="deemed" if deemed else actor,
        approved_at=timezone.now(),
    )
    settlement_event_record(
        settlement=fresh,
        actor=SYSTEM if deemed else actor,
        action="deemed" if deemed else "approved",
        detail={"review_due_at": fresh.review_due_at.isoformat()}
        if deemed and fresh.review_due_at
        else {},
    )
    _close_and_check(fresh)
    settlement_event(fresh, "settlement.approved")
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
    # Imported here: billing/tasks.py imports the Stripe SDK (its retry list), which the
    # importers of this module (the admin, at every start-up) need not pay for.
    from billing.tasks import settlement_invoice

    transaction.on_commit(lambda: settlement_invoice.delay(settlement_id), robust=True)


@transaction.atomic(durable=True)
def settlement_dispute(
    *,
    settlement: Settlement,
    reason: str,
    actor: str,
    reason_code: str = "other",
    lines: list[str] | None = None,
    amount: Decimal | None = None,
) -> Settlement:
    """The licensor contests a draft: nothing is posted, the dispute is on record, and the month
    stays open (the host may correct its usage; the next run revises the settlement). `lines`
    are ids of this settlement's lines (the API checks them first, naming the field)."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a dispute needs a reason")
    if reason_code not in DISPUTE_REASON_CODES:
        raise ValueError(f"unknown reason code {reason_code!r}")
    if amount is not None and amount < 0:
        raise ValueError("a contested amount is never negative")
    lines = sorted(set(lines or []), key=lambda i: (len(i), i))
    own = {str(pk) for pk in settlement.lines.values_list("pk", flat=True)}
    if not set(lines) <= own:
        raise ValueError(f"not lines of this settlement: {sorted(set(lines) - own)}")
    fresh = _claim(
        settlement,
        allowed=(SettlementStatus.DRAFT,),
        to=SettlementStatus.DISPUTED,
        action="dispute",
        decided_by=actor,
        disputed_at=timezone.now(),
        dispute_reason=reason,
        dispute_reason_code=reason_code,
        dispute_lines=lines,
        dispute_amount=amount,
    )
    settlement_event_record(
        settlement=fresh,
        actor=actor,
        action="disputed",
        detail={
            "reason_code": reason_code,
            "reason": reason,
            "lines": lines,
            "amount": None if amount is None else format(quantize(amount, fresh.currency), "f"),
        },
    )
    settlement_event(fresh, "settlement.disputed")
    return fresh


@transaction.atomic(durable=True)
def settlement_respond(*, settlement: Settlement, message: str, actor: str) -> Settlement:
    """The host answers a dispute; allowed while disputed. The row is locked so that an answer
    never lands after a run superseded the settlement, or after an approval."""
    message = message.strip()
    if not message:
        raise ValueError("an answer needs a message")
    fresh = Settlement.objects.select_for_update().get(pk=settlement.pk)
    if fresh.status != SettlementStatus.DISPUTED:
        raise SettlementStateError(fresh, "answer")
    settlement_event_record(
        settlement=fresh, actor=actor, action="responded", detail={"message": message}
    )
    settlement_event(fresh, "settlement.responded")
    return fresh


__all__ = ["settlement_approve", "settlement_dispute", "settlement_respond"]
