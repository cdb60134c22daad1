"""Refunds of a host's payment (billing/refunds.py, docs/payouts.md "Refunds"): one row per
refund Tollgate recorded, append-only, beside the ledger entry that posts it."""

from __future__ import annotations

from django.db import models


class SettlementRefund(models.Model):
    """Money given back to the host of a paid settlement: what Stripe's `charge.refunded` added
    to the charge's `amount_refunded` (cumulative on Stripe) since the last row of that charge.
    `amount` = `platform_fee` + `withholding` + `licensor_share`, minor units; the licensor's share
    is carried into its next payout as a negative `PayoutAdjustment`."""

    settlement = models.ForeignKey(
        "billing.Settlement", on_delete=models.PROTECT, related_name="refunds"
    )
    charge_id = models.CharField(max_length=255)
    # The charge's amount_refunded when this row was written: (charge, cumulative) is unique, so a
    # second event about the same refund records nothing.
    cumulative_minor = models.BigIntegerField()
    amount_minor = models.BigIntegerField()
    platform_fee_minor = models.BigIntegerField()
    withholding_minor = models.BigIntegerField()
    licensor_share_minor = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["charge_id", "cumulative_minor"], name="billing_refund_once"
            ),
            models.CheckConstraint(
                condition=models.Q(amount_minor__gt=0)
                & models.Q(
                    amount_minor=models.F("platform_fee_minor")
                    + models.F("withholding_minor")
                    + models.F("licensor_share_minor")
                ),
                name="billing_refund_adds_up",
            ),
        ]

    def __str__(self) -> str:
        return f"refund {self.charge_id}: {self.amount_minor}"
