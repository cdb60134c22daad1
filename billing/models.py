"""Billing runs and settlements.

A *billing run* turns one month of usage into settlements: one per (licensor, host, period,
currency). The month is aggregated once, in PostgreSQL, into `BillingRunGroup` rows (one per
model, category, region and terms: never one per record), and one task per (licensor, host)
rates its groups with `licensing.rating` and writes its settlements (docs/billing.md).

A settlement is a *draft* until the licensor approves or disputes it; a re-run recomputes a draft.
Once decided (approved, disputed, invoiced, paid, superseded) neither it nor its lines ever change:
triggers (migrations 0002, 0008, 0013) refuse it, whatever client writes. A disputed one is replaced
by a revision when a run finds its usage changed (billing/revisions.py). Usage that arrives for a
settled (approved) month is billed as `adjustment` lines of a later settlement.

Amounts are `Decimal` in major units of the settlement's currency (dollars), already rounded to
the currency's minor unit by the rating engine; token counts are integers.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db import models
from django.db.models import Q

from core.money import quantize
from core.periods import PERIOD_PATTERN
from core.vocabulary import LINE_KIND_LABELS, LINE_KINDS
from licensing.models import Host, License, Licensor


class CountField(models.DecimalField):
    """A sum of integer counts (tokens, requests) as numeric(30,0), read back as an int.

    One record's count is a bigint; a sum of them can pass bigint's 9.2e18 (two records near the
    maximum do), and a sum that does not fit must never stop a billing run. 30 digits hold more
    than 10^11 records at bigint's maximum each."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 30)
        kwargs.setdefault("decimal_places", 0)
        super().__init__(*args, **kwargs)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> int | None:
        return None if value is None else int(value)


class BillingRun(models.Model):
    """One execution of the monthly run for a period. Progress (`pairs_done` of `pairs_total`) is
    updated by each pair task as it finishes, so an operator sees a running run advance.

    A pair that cannot be settled (any error) is recorded on its `BillingRunPair` and counted in
    `pairs_failed`; every other pair is still settled. The run then ends `partial` (some pairs
    failed) or `failed` (all did), and `error` names each failed pair and why."""

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        DONE = "done", "done"
        PARTIAL = "partial", "partial"  # finished; some pairs failed (see `error`)
        FAILED = "failed", "failed"
        SUPERSEDED = "superseded", "superseded"  # a later run of the same period took over

    period = models.CharField(max_length=7)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=16, default="task")  # task | command
    # The aggregation's snapshot: usage received after it is not in this run.
    snapshot_at = models.DateTimeField(null=True, blank=True)
    groups_count = models.IntegerField(default=0)  # rows of the month's aggregation
    pairs_total = models.IntegerField(default=0)  # (licensor, host) pairs to bill
    pairs_done = models.IntegerField(default=0)  # settled or failed
    pairs_failed = models.IntegerField(default=0)
    settlements_written = models.IntegerField(default=0)  # created or recomputed drafts
    settlements_settled = models.IntegerField(default=0)  # already settled: left as they were
    started_at = models.DateTimeField(auto_now_add=True)
    aggregated_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Who runs it, to tell a run whose process died (billing/stale.py): "<hostname>:<pid>" of
    # the run_billing process; "" for a Celery run, whose pair tasks a dead worker's broker
    # delivers again.
    owner = models.CharField(max_length=300, blank=True, default="")
    # When the run started or a pair of it last finished: a run that stops advancing for
    # BILLING_RUN_STALE_SECONDS is taken for dead.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # A Celery run that stopped advancing has its pairs not done queued again (billing/stale.py,
    # `billing_runs_resume`): when it last was, and how many times.
    resumed_at = models.DateTimeField(null=True, blank=True)
    resumes = models.IntegerField(default=0)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(period__regex=PERIOD_PATTERN), name="billing_run_period_format"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["running", "done", "partial", "failed", "superseded"]),
                name="billing_run_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.period} ({self.status})"

    @property
    def progress(self) -> str:
        return f"{self.pairs_done}/{self.pairs_total}"

    @property
    def elapsed_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class BillingRunPair(models.Model):
    """A (licensor, host) pair of a run: its task marks it done, once (idempotent re-delivery)."""

    # The run's own bookkeeping, written by the statement after the run's INSERT in the same
    # transaction (billing/runs.py) and deleted with it (Django's cascade): no database check of
    # the key (one per row, tens of thousands a run, at commit) and no index of its own (the
    # unique key below starts with it).
    run = models.ForeignKey(
        BillingRun,
        on_delete=models.CASCADE,
        related_name="pairs",
        db_constraint=False,
        db_index=False,
    )
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="+")
    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="+")
    done_at = models.DateTimeField(null=True, blank=True)  # settled, or failed
    # Why the pair could not be settled ("" when it was): the exception, for the operator.
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "host", "licensor"], name="billing_runpair_unique"
            )
        ]

    def __str__(self) -> str:
        return f"run {self.run_id}: host {self.host_id} / licensor {self.licensor_id}"


class BillingRunGroup(models.Model):
    """One row of the month's aggregation (billing/aggregation.py): the sums of the usage that
    shares host, license, model, category, region, currency and the terms that rate it (and, for
    licenses with thresholds, the side of each threshold). The pair tasks rate these rows; the
    month's records never leave PostgreSQL."""

    # As BillingRunPair.run: the run's staging rows, ~4 a pair; the index below starts with it.
    run = models.ForeignKey(
        BillingRun,
        on_delete=models.CASCADE,
        related_name="groups",
        db_constraint=False,
        db_index=False,
    )
    host_id = models.BigIntegerField()
    licensor_id = models.BigIntegerField()
    license_id = models.BigIntegerField()
    model_slug = models.CharField(max_length=128)
    customer_category = models.CharField(max_length=16)
    region = models.CharField(max_length=2)
    currency = models.CharField(max_length=3)
    # NULL: no terms were in force (unlicensed usage), distinct from any label.
    terms_kind = models.CharField(max_length=16, null=True)  # noqa: DJ001
    terms_id = models.BigIntegerField(null=True)
    terms_label = models.CharField(max_length=64, null=True)  # noqa: DJ001
    input_tokens = models.DecimalField(max_digits=30, decimal_places=0)  # sums may pass bigint
    cached_input_tokens = models.DecimalField(max_digits=30, decimal_places=0)
    output_tokens = models.DecimalField(max_digits=30, decimal_places=0)
    requests = models.DecimalField(max_digits=30, decimal_places=0)
    revenue = models.DecimalField(max_digits=30, decimal_places=6)
    record_count = models.BigIntegerField()
    revenue_before = models.DecimalField(max_digits=30, decimal_places=6)
    tokens_before = models.DecimalField(max_digits=30, decimal_places=0)
    ytd_revenue = models.DecimalField(max_digits=30, decimal_places=6)  # calendar year to date
    ytd_tokens = models.DecimalField(max_digits=30, decimal_places=0)

    class Meta:
        indexes = [models.Index(fields=["run", "host_id", "licensor_id"])]

    def __str__(self) -> str:
        return f"{self.model_slug} {self.customer_category} {self.terms_label}"


class SettlementStatus(models.TextChoices):
    DRAFT = "draft", "draft"
    APPROVED = "approved", "approved"
    DISPUTED = "disputed", "disputed"
    INVOICED = "invoiced", "invoiced"
    PAID = "paid", "paid"
    VOID = "void", "void"
    SUPERSEDED = "superseded", "superseded"  # a revision replaced it (billing/revisions.py)


# The month is settled for the pair: later usage of it is late and billed as an adjustment. A
# disputed settlement is not settled (its month stays open until approval, docs/billing.md).
SETTLED_STATUSES = (
    SettlementStatus.APPROVED,
    SettlementStatus.INVOICED,
    SettlementStatus.PAID,
)
# Not current: exactly one settlement per (licensor, host, period, currency) is in none of these.
NOT_CURRENT_STATUSES = (SettlementStatus.SUPERSEDED, SettlementStatus.VOID)


class Settlement(models.Model):
    """What a host owes a licensor for one month in one currency (docs/api.md, "A settlement")."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="settlements")
    # No index of its own: the (host, period) index below serves every lookup by host, and one
    # index less is one less to write per settlement a billing run inserts (migration 0013).
    host = models.ForeignKey(
        Host, on_delete=models.PROTECT, related_name="settlements", db_index=False
    )
    period = models.CharField(max_length=7)
    currency = models.CharField(max_length=3)
    status = models.CharField(
        max_length=16, choices=SettlementStatus.choices, default=SettlementStatus.DRAFT
    )
    # The sum of the rounded line amounts, in major units of `currency`.
    total = models.DecimalField(max_digits=24, decimal_places=4, default=Decimal(0))
    usage_digest = models.CharField(max_length=80)
    terms_digest = models.CharField(max_length=80)
    # Records rated for the period itself (late usage excluded): approval compares it with the
    # usage there is by then, to catch records that arrived while the draft waited.
    record_count = models.BigIntegerField(default=0)
    # The engine's flags (unlicensed usage, attribution obligations), as RatingResult shows them.
    flags = models.JSONField(default=list, blank=True)
    # Usage received up to this instant was rated (`BillingRun.snapshot_at`); --verify re-rates
    # from the same rows.
    computed_at = models.DateTimeField()
    # A digest of the lines as the run wrote them (billing/settling.py): a re-run whose lines
    # come out the same leaves them in place instead of deleting and copying them again.
    # Bookkeeping of the run only; "" where unknown (rows written before it existed).
    lines_digest = models.CharField(max_length=80, blank=True, default="")
    # Not indexed: a re-run moves every draft to itself, and an index on `run` would make each
    # of those updates write every index of the table; without it, and with room left on each
    # page (fillfactor, migration 0014), they are HOT updates. Settlements of a run are found
    # by their period first (index below).
    run = models.ForeignKey(
        BillingRun,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="settlements",
        db_index=False,
    )
    dispute_reason = models.TextField(blank=True)
    # The rest of the dispute (docs/billing.md, "Disputes"): one of DISPUTE_REASON_CODES, the ids
    # of the contested lines, the contested amount (major units of `currency`) or None.
    dispute_reason_code = models.CharField(max_length=32, blank=True)
    dispute_lines = models.JSONField(default=list, blank=True)
    dispute_amount = models.DecimalField(max_digits=24, decimal_places=4, null=True, blank=True)
    # Revisions: 1 for the first settlement of its key; a revision supersedes the disputed one.
    revision = models.PositiveIntegerField(default=1)
    supersedes = models.OneToOneField(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="superseded_by",
    )
    # Deemed acceptance: the first computation's `computed_at` plus the review_days of the last
    # terms that rated its usage; None when those terms have none (never deemed).
    first_computed_at = models.DateTimeField(null=True, blank=True)
    review_due_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    disputed_at = models.DateTimeField(null=True, blank=True)
    # Who approved ("licensor:<slug>", "admin:<username>", "deemed") or disputed.
    decided_by = models.CharField(max_length=200, blank=True)
    # Invoicing through Stripe (billing/stripe_gateway.py, docs/stripe.md). The invoice id is set
    # once, with the move to `invoiced` (trigger of migration 0003); NULL (not "") until then,
    # so that the unique constraint holds only between real ids. Unique by a constraint in Meta,
    # not `unique=True`: on PostgreSQL that also builds a varchar_pattern_ops "_like" index for
    # LIKE queries, and nothing looks an invoice id up but by equality (migration 0013).
    stripe_invoice_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # The claim of an invoicing attempt: set by the worker that calls Stripe, cleared when it
    # fails; a claim older than INVOICING_LEASE is a dead worker's and may be taken over.
    invoicing_started_at = models.DateTimeField(null=True, blank=True)
    invoice_error = models.TextField(blank=True)  # the last failed attempt, for the operator
    invoiced_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    # The host's bank transfer reference, when it paid by bank (`record_host_payment`) rather
    # than a Stripe invoice (docs/payouts.md).
    payment_reference = models.CharField(max_length=200, blank=True, db_default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-period", "licensor__slug", "host__slug", "currency"]
        permissions = [("send_invoice", "Can send a settlement's invoice through Stripe")]
        constraints = [
            # The name `unique=True` gave it (migrations 0003 to 0012): the same constraint.
            models.UniqueConstraint(
                fields=["stripe_invoice_id"], name="billing_settlement_stripe_invoice_id_key"
            ),
            # Exactly one current settlement per key: superseded and void ones step aside.
            models.UniqueConstraint(
                fields=["licensor", "host", "period", "currency"],
                condition=~Q(status__in=["superseded", "void"]),
                name="billing_settlement_one_current",
            ),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in SettlementStatus]),
                name="billing_settlement_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(period__regex=PERIOD_PATTERN), name="billing_settlement_period_format"
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[A-Z]{3}$"), name="billing_settlement_currency_iso"
            ),
            # Invoiced means a Stripe invoice exists, and we know which; paid means either that
            # invoice was paid or the host's bank transfer is on record.
            models.CheckConstraint(
                condition=~Q(status="invoiced") | Q(stripe_invoice_id__isnull=False),
                name="billing_settlement_invoiced_has_invoice",
            ),
            models.CheckConstraint(
                condition=~Q(status="paid")
                | Q(stripe_invoice_id__isnull=False)
                | ~Q(payment_reference=""),
                name="billing_settlement_paid_has_payment",
            ),
        ]
        indexes = [
            models.Index(fields=["host", "period"]),
            models.Index(fields=["period", "status"], name="billing_set_period_status"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.licensor.slug} ← {self.host.slug} {self.period} {self.currency} ({self.status})"
        )

    @property
    def is_settled(self) -> bool:
        return self.status in SETTLED_STATUSES

    @property
    def superseded_by_pk(self) -> uuid.UUID | None:
        """The revision that replaced this settlement, if any (the reverse of `supersedes`)."""
        revision = getattr(self, "superseded_by", None)
        return None if revision is None else revision.pk

    @property
    def total_display(self) -> str:
        return format(quantize(self.total, self.currency), "f")


DISPUTE_REASON_CODES = (
    "quantity_contested",
    "rate_incorrect",
    "missing_usage",
    "duplicate_billing",
    "other",
)

SETTLEMENT_ACTIONS = (
    "computed",
    "recomputed",
    "approved",
    "disputed",
    "responded",
    "superseded",
    "revised",
    "deemed",
    "invoiced",
    "paid",
    "refunded",
    "voided",
)


class SettlementEvent(models.Model):
    """One step in a settlement's life (docs/billing.md, "History"), written by the transaction
    that made the change. Append-only: a trigger (migration 0007) refuses UPDATE, and DELETE but
    with a draft that a run removes (its history goes with it)."""

    settlement = models.ForeignKey(Settlement, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField()
    actor = models.CharField(max_length=200)  # licensor:<slug>, host:<slug>, admin:<user>, system
    action = models.CharField(max_length=20)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["settlement", "at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=SETTLEMENT_ACTIONS), name="billing_event_action_valid"
            )
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.action}"


class SettlementLine(models.Model):
    """One line of a settlement, with the fields of a line's JSON (docs/api.md). Quantities of an
    `adjustment` line are deltas and may be negative."""

    # No index of its own: the unique (settlement, position) constraint's index serves every
    # lookup by settlement (migration 0013).
    settlement = models.ForeignKey(
        Settlement, on_delete=models.CASCADE, related_name="lines", db_index=False
    )
    position = models.PositiveIntegerField()
    # The license whose terms rated the line: re-rating a settled month is done per license.
    license = models.ForeignKey(License, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=list(LINE_KIND_LABELS.items()))
    model = models.CharField(max_length=128, blank=True)
    customer_category = models.CharField(max_length=16, blank=True)
    period = models.CharField(max_length=7)  # the usage's month; an adjustment's settled month
    license_version = models.CharField(max_length=64)
    input_tokens = CountField(default=0)  # sums of the month's records: may pass bigint
    cached_input_tokens = CountField(default=0)
    output_tokens = CountField(default=0)
    requests = CountField(default=0)
    revenue = models.DecimalField(max_digits=26, decimal_places=6, default=Decimal(0))
    amount = models.DecimalField(max_digits=24, decimal_places=4)  # rounded to the minor unit
    # The engine's words for the charge; a greater_of of many charges with thresholds is long.
    description = models.TextField()
    flags = models.JSONField(default=list, blank=True)  # kinds of the engine's flags on this line

    class Meta:
        ordering = ["settlement", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["settlement", "position"], name="billing_line_position_unique"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=LINE_KINDS),
                name="billing_line_kind_valid",
            ),
        ]

    def __str__(self) -> str:
        what = " ".join(p for p in (self.kind, self.model, self.customer_category) if p)
        return f"#{self.position} {what}"


class PendingRerate(models.Model):
    """A settled (host, licensor, period) that has usage its settlement did not rate (records that
    arrived between the draft's computation and its approval, which are not marked late). The
    next run re-rates it into adjustment lines, like late usage."""

    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="+")
    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="+")
    period = models.CharField(max_length=7)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["host", "licensor", "period"], name="billing_pendingrerate_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.host_id}/{self.licensor_id} {self.period}"


class StripeEvent(models.Model):
    """A Stripe webhook event we processed: the unique `event_id` is what makes each event
    processed once (Stripe delivers at least once, and retries for days). The row is inserted in
    the same transaction as the event's effects, so an event whose processing failed leaves no
    row and is processed again on Stripe's next delivery."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=255, blank=True)  # e.g. the invoice's id
    outcome = models.CharField(max_length=200, blank=True)  # what processing did, for operators
    # The settlement a payment event named (by our invoice id or its metadata), and what in it
    # differed from the invoice we sent ("" when it matched): a mismatched payment is never posted
    # and waits for an operator (the admin's Stripe events, filter "mismatched").
    settlement = models.ForeignKey(
        Settlement,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="stripe_events",
    )
    mismatch = models.TextField(blank=True, db_default="")
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"


# Outbound webhooks, the reviewers' email notifications, refunds and payouts live in their own
# modules; imported here so that Django registers them, and so that `billing.models` names them.
from billing.notification_models import Notification  # noqa: E402, F401
from billing.payout_models import (  # noqa: E402, F401
    PayableSettlement,
    Payout,
    PayoutAdjustment,
    PayoutStatus,
)
from billing.refund_models import SettlementRefund  # noqa: E402, F401
from billing.webhook_models import WebhookDelivery, WebhookEndpoint, WebhookEvent  # noqa: E402, F401
