"""Payouts to licensors (billing/payouts.py, docs/payouts.md): the payments of a licensor's
available balance, the paid settlements they take, and the amounts carried into the next one."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from licensing.models import Licensor


class PayoutStatus(models.TextChoices):
    PENDING = "pending", "pending"
    PAID = "paid", "paid"
    FAILED = "failed", "failed"


class Payout(models.Model):
    """One payment of a licensor's available balance in one currency. Amounts are signed integers
    of the currency's minor unit (cents): net = gross - platform_fee - withholding +
    carried_forward. At most one per (licensor, currency, day): a second run of the same day
    creates nothing (the unique constraint decides between concurrent runs)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="payouts")
    currency = models.CharField(max_length=3)
    day = models.DateField()  # the run's as-of date
    rail = models.CharField(max_length=16)  # the licensor's rail when the payout was made
    stripe_account = models.CharField(max_length=80, blank=True)
    status = models.CharField(
        max_length=16, choices=PayoutStatus.choices, default=PayoutStatus.PENDING
    )
    gross_minor = models.BigIntegerField()
    platform_fee_minor = models.BigIntegerField()
    withholding_minor = models.BigIntegerField()
    carried_forward_minor = models.BigIntegerField()
    net_minor = models.BigIntegerField()
    # The bank reference (manual) or the Stripe transfer id (stripe_connect), once paid.
    reference = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    # The claim of a transfer attempt (stripe_connect): set before Stripe is called.
    sending_started_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("record_payout", "Can record a manual payout as paid")]
        constraints = [
            models.UniqueConstraint(
                fields=["licensor", "currency", "day"], name="billing_payout_one_per_day"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "paid", "failed"]),
                name="billing_payout_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    net_minor=models.F("gross_minor")
                    - models.F("platform_fee_minor")
                    - models.F("withholding_minor")
                    + models.F("carried_forward_minor")
                ),
                name="billing_payout_net_adds_up",
            ),
            models.CheckConstraint(
                condition=Q(net_minor__gt=0), name="billing_payout_net_positive"
            ),
            models.CheckConstraint(
                condition=~Q(status="paid") | Q(reference__isnull=False),
                name="billing_payout_paid_has_reference",
            ),
        ]

    def __str__(self) -> str:
        return f"payout {self.licensor_id} {self.currency} {self.day} ({self.status})"


class PayableSettlement(models.Model):
    """A settlement its host has paid, as it counts toward its licensor's payouts: written once,
    in the transaction that records the payment, with the fee (as posted at approval) and the
    withholding (posted then). Amounts in minor units. `payout` is set once, when a payout takes
    it."""

    settlement = models.OneToOneField(
        "billing.Settlement", on_delete=models.PROTECT, related_name="payable"
    )
    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="+")
    currency = models.CharField(max_length=3)
    gross_minor = models.BigIntegerField()
    platform_fee_minor = models.BigIntegerField()
    withholding_minor = models.BigIntegerField()
    payout = models.ForeignKey(
        Payout, on_delete=models.PROTECT, null=True, blank=True, related_name="items"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["licensor", "currency", "payout"])]

    def __str__(self) -> str:
        return f"payable {self.settlement_id}"


class PayoutAdjustment(models.Model):
    """A signed amount (minor units) carried into a licensor's next payout: the credit of a
    negative settlement (< 0), a failed payout's net given back (> 0), a reversal. `source` is
    unique: each cause is carried once."""

    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="+")
    currency = models.CharField(max_length=3)
    amount_minor = models.BigIntegerField()
    source = models.CharField(max_length=200, unique=True)
    description = models.CharField(max_length=200)
    payout = models.ForeignKey(
        Payout, on_delete=models.PROTECT, null=True, blank=True, related_name="adjustments"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.source}: {self.amount_minor}"
