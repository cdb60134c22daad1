"""`python manage.py deliver_webhooks [--all]`: send the outbound webhook deliveries that are due
(`--all`: every pending one, due or not). With a Celery broker, tasks and beat do this."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing.webhook_delivery import deliveries_send


class Command(BaseCommand):
    help = "Send the outbound webhook deliveries that are due (--all: every pending one)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="every pending delivery, due or not")

    def handle(self, *args: Any, **options: Any) -> None:
        delivered, failed = deliveries_send(everything=options["all"])
        self.stdout.write(f"webhooks: {delivered} delivered, {failed} failed (to be retried)")
