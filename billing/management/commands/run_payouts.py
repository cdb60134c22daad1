"""`python manage.py run_payouts [--as-of YYYY-MM-DD]` (README, "Management commands";
docs/payouts.md): pays licensors their available balances through the same service the monthly
beat task calls, and prints one line per payout made. Safe to repeat: a second run of the same
day makes nothing new.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.payouts import money, run_payouts

DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Command(BaseCommand):
    help = "Pay licensors their available balances (one payout per licensor, currency and day)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--as-of", help="YYYY-MM-DD (default: today, UTC)")

    def handle(self, *args: Any, **options: Any) -> None:
        raw = options["as_of"]
        if raw is None:
            day = timezone.now().date()
        else:
            try:
                if not DAY_RE.match(raw):
                    raise ValueError
                day = dt.date.fromisoformat(raw)
            except ValueError:
                raise CommandError(f"--as-of: {raw!r} is not a date YYYY-MM-DD") from None
        made = run_payouts(as_of=day)
        for payout in made:
            self.stdout.write(
                f"payout {payout.pk} {payout.licensor.slug} {payout.currency} "
                f"{money(payout.net_minor, payout.currency)} ({payout.rail}, {payout.status}): "
                f"{payout.items.count()} settlement(s)"
            )
        self.stdout.write(f"{len(made)} payout(s) made for {day.isoformat()}")
