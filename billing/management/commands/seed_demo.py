"""`python manage.py seed_demo [--usage] [--history N] [--serve]`: the demo world, idempotent.

`make demo` runs it with --serve: seed the catalog, keys and logins; bill the months of history;
start the demo's webhook receiver and subscribe MiniMax to it; post last month's demo usage
through the REST API; run the monthly billing run for it; dispute one settlement and revise it;
deliver the webhooks; print the settlements; then serve the API and admin on 127.0.0.1:8000.
The reviewers' emails are printed on stdout (EMAIL_URL unset with DEBUG on: console://).
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test import override_settings
from django.utils import timezone

from billing.demo import DemoWorld, demo_approve, demo_history, demo_post_usage, demo_seed
from billing.demo_disputes import demo_dispute_and_revision
from billing.demo_payouts import demo_payouts
from billing.demo_webhooks import (
    DEFAULT_PORT,
    DemoReceiver,
    demo_deliveries_loop,
    demo_webhook_endpoint,
)
from billing.selectors import settlements_for_period
from billing.webhook_delivery import deliveries_send
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
        parser.add_argument(
            "--webhook-port",
            type=int,
            default=DEFAULT_PORT,
            help=f"the demo's webhook receiver's port on 127.0.0.1 (default {DEFAULT_PORT})",
        )

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

        receiver = None
        if options["usage"] or options["serve"]:
            period = options["period"] or previous_period(timezone.now())
            if options["history"]:
                self.stdout.write(
                    heading(f"{options['history']} months of history before {period}")
                )
                # Back-filled months: their drafts are approved at once, so their reviewers'
                # "ready for review" emails go nowhere instead of filling the screen.
                with override_settings(
                    EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend"
                ):
                    history = demo_history(world, period, options["history"])
                for month, records, count in history:
                    self.stdout.write(
                        f"  {month}  {records:>6} records  {count} settlements billed, approved"
                    )
            receiver = self._webhook_receiver(world, options["webhook_port"])
            self.stdout.write(heading(f"Usage for {period}, posted to POST /api/v1/usage"))
            for posted in demo_post_usage(world, period):
                self.stdout.write(
                    f"  {posted.host:<10} {posted.accepted:>6} accepted  "
                    f"{posted.duplicates:>6} duplicates  {posted.rejected:>4} rejected"
                )
            self.stdout.write(heading(f"Billing run for {period}"))
            self.stdout.write("  (the reviewers' emails are printed below: EMAIL_URL=console://)")
            call_command("run_billing", period=period, stdout=self.stdout, stderr=self.stderr)
            approved = demo_approve(period)
            self._dispute(world, period)
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
            if receiver is not None:
                self.stdout.write(heading("Webhook deliveries (python manage.py deliver_webhooks)"))
                delivered, failed = deliveries_send(everything=True)
                self.stdout.write(f"  {delivered} delivered, {failed} failed")
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
            if receiver is not None:
                demo_deliveries_loop()  # no broker: what beat would do every minute
            call_command("runserver", addr, use_reloader=False)
        if receiver is not None:
            receiver.stop()

    def _webhook_receiver(self, world: DemoWorld, port: int) -> DemoReceiver | None:
        """Start the demo's receiver and subscribe MiniMax to it (billing/demo_webhooks.py)."""
        self.stdout.write(self.style.MIGRATE_HEADING("Webhooks"))
        receiver = DemoReceiver(write=self.stdout.write, port=port).start()
        endpoint = demo_webhook_endpoint(world, receiver)
        if endpoint is None:
            receiver.stop()
            self.stdout.write(
                "  skipped: set TOLLGATE_WEBHOOKS_ALLOW_PRIVATE=true (make demo does) to let "
                "MiniMax subscribe a receiver on 127.0.0.1"
            )
            return None
        self.stdout.write(
            f"  MiniMax's endpoint {endpoint.pk} -> {receiver.url} (every event); its deliveries "
            "are in the admin: Billing > Webhook deliveries"
        )
        return receiver

    def _dispute(self, world: DemoWorld, period: str) -> None:
        """A dispute and its revision (billing/demo_disputes.py)."""
        story = demo_dispute_and_revision(world, period)
        if story is None:
            return
        self.stdout.write(self.style.MIGRATE_HEADING(f"A dispute of {period} and its revision"))
        first, revision = story.disputed, story.revision
        self.stdout.write(
            f"  minimax disputed {first.licensor.slug} <- {first.host.slug} "
            f"({first.currency} {quantize(first.total, first.currency)}): "
            f'{first.dispute_reason_code}, "{first.dispute_reason}"'
        )
        if revision is not None:
            self.stdout.write(
                f"  nebius posted the usage it had missed; the run wrote revision "
                f"{revision.revision}: {revision.currency} "
                f"{quantize(revision.total, revision.currency)}, {revision.status} "
                f"(the disputed one is {first.status})"
            )

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
