"""`python manage.py deem_settlements [--as-of RFC3339]` (README, "Management commands").

Approves, as `deemed`, every draft settlement whose `review_due_at` is at or before `--as-of`
(default now): the same service the hourly beat task runs (billing/deeming.py). Prints one line
per settlement approved.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from billing.deeming import settlements_deem


class Command(BaseCommand):
    help = "Approve draft settlements past their review_due_at, as deemed accepted."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--as-of", help="RFC 3339 instant with offset (default: now)")

    def handle(self, *args: Any, **options: Any) -> None:
        as_of = None
        if options["as_of"]:
            as_of = parse_datetime(options["as_of"])
            if as_of is None or as_of.tzinfo is None:
                raise CommandError("--as-of: must be an RFC 3339 instant with offset")
        approved = settlements_deem(as_of=as_of)
        for s in approved:
            self.stdout.write(
                f"{s.licensor.slug} {s.host.slug} {s.period} {s.currency} "
                f"{s.total_display} deemed (due {s.review_due_at:%Y-%m-%dT%H:%M:%SZ})"
            )
        self.stdout.write(f"{len(approved)} settlement(s) deemed accepted")
