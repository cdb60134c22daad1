"""`python manage.py record_host_payment --settlement ID --reference REF [--amount X]`
(README, "Management commands"; docs/payouts.md).

Records a host's bank transfer of a settlement's full total: the settlement moves to `paid`, the
payment and the withholding are posted, and the total becomes payable to the licensor. A
settlement not approved or invoiced, one already paid, or an `--amount` other than the total:
exit 1 with the reason, nothing written.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.payouts import PaymentError, host_payment_record
from core.money import parse_decimal


class Command(BaseCommand):
    help = "Record a host's bank transfer of a settlement's full total."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--settlement", required=True, help="the settlement's id")
        parser.add_argument("--reference", required=True, help="the bank transfer's reference")
        parser.add_argument("--amount", help="the amount received (must be the full total)")

    def handle(self, *args: Any, **options: Any) -> None:
        amount: Decimal | None = None
        if options["amount"] is not None:
            try:
                amount = parse_decimal(options["amount"], field="amount")
            except (TypeError, ValueError) as exc:
                raise CommandError(str(exc)) from exc
        try:
            settlement = host_payment_record(
                settlement_id=options["settlement"],
                reference=options["reference"],
                amount=amount,
            )
        except PaymentError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"settlement {settlement.pk} paid: {settlement.total_display} {settlement.currency} "
            f"({settlement.licensor.slug}/{settlement.host.slug} {settlement.period}), "
            f"bank reference {settlement.payment_reference}"
        )
