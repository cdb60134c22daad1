"""`python manage.py seed_demo [--usage] [--serve]`: the demo world, idempotent.

`make demo` runs it with --serve: seed the catalog, keys and logins; post last month's demo usage
through the REST API; run the monthly billing run for it; print the settlements; then serve the API
and admin on 127.0.0.1:8000.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.demo import demo_approve, demo_history, demo_post_usage, demo_seed
from billing.demo_payouts import demo_payouts
from billing.selectors import settlements_for_period
from core.money import quantize
from core.periods import previous_period
from licensing.catalog import CatalogError


class Command(BaseCommand):
    help = (
        "Load the demo catalog, API keys and admin logins; with --usage also post last month's "
        "usage and bill it; with --serve do all that, then serve on 127.0.0.1:8000."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--usage", action="store_true", help="post a month of usage and bill it"
        )
        parser.add_argument("--serve", action="store_true", help="--usage, then serve")
        parser.add_argument("--period", help="YYYY-MM of the demo month (default: last month)")
        parser.add_argument(
            "--history",
            type=int,
            default=0,
            help="with --usage: also bill and approve this many months before it (charts)",
        )
        parser.add_argument("--addrport", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        heading = self.style.MIGRATE_HEADING
        try:
            world = demo_seed()
        except CatalogError as exc:
            raise CommandError(
                "the demo catalog does not apply:\n  " + "\n  ".join(exc.errors)
            ) from None
        self.stdout.write(heading("Catalog"))
        for line in world.report.lines():
            self.stdout.write(f"  {line}")

        if options["usage"] or options["serve"]:
            period = options["period"] or previous_period(timezone.now())
            if options["history"]:
                self.stdout.write(
                    heading(f"{options['history']} months of history before {period}")
                )
                for month, records, count in demo_history(world, period, options["history"]):
                    self.stdout.write(
                        f"  {month}  {records:>6} records  {count} settlements billed, approved"
                    )
            self.stdout.write(heading(f"Usage for {period}, posted to POST /api/v1/usage"))
            for posted in demo_post_usage(world, period):
                self.stdout.write(
                    f"  {posted.host:<10} {posted.accepted:>6} accepted  "
                    f"{posted.duplicates:>6} duplicates  {posted.rejected:>4} rejected"
                )
            self.stdout.write(heading(f"Billing run for {period}"))
            call_command("run_billing", period=period, stdout=self.stdout, stderr=self.stderr)
            approved = demo_approve(period)
            self.stdout.write(heading(f"Settlements for {period}"))
            self._settlements_table(period)
            if approved is not None:
                self.stdout.write(
                    f"  (the demo approved {approved.licensor.slug} <- {approved.host.slug} and "
                    "posted its accrual; log in as minimax to review the others)"
                )
            self.stdout.write(heading(f"Host payments and payouts for {period}"))
            for line in demo_payouts(period):
                self.stdout.write(f"  {line}")
            self.stdout.write(heading("Ledger"))
            call_command("verify_ledger", stdout=self.stdout, stderr=self.stderr)

        self.stdout.write(heading("API keys (demo keys: the same every run)"))
        for slug, key in world.host_keys.items():
            self.stdout.write(f"  host     {slug:<10} {key}")
        for slug, key in world.licensor_keys.items():
            self.stdout.write(f"  licensor {slug:<10} {key}")
        self.stdout.write(heading("Admin logins"))
        for user, password, role in world.logins:
            self.stdout.write(f"  {user} / {password}  ({role})")

        if options["serve"]:
            addr = options["addrport"]
            self.stdout.write(
                self.style.SUCCESS(
                    f"Serving on http://{addr}/  (admin: http://{addr}/admin/, "
                    f"API docs: http://{addr}/api/docs/)"
                )
            )
            call_command("runserver", addr, use_reloader=False)

    def _settlements_table(self, period: str) -> None:
        """Each settlement with its lines, as a licensor reviews it."""
        for s in settlements_for_period(period=period):
            self.stdout.write(
                f"  {s.licensor.slug} <- {s.host.slug}  {s.currency} "
                f"{quantize(s.total, s.currency):>12}  {s.status}"
            )
            for line in s.lines.all():
                what = " ".join(p for p in (line.kind, line.model, line.customer_category) if p)
                self.stdout.write(
                    f"      {what:<44} {quantize(line.amount, s.currency):>12}  {line.description}"
                )
