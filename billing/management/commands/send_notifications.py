"""`python manage.py send_notifications [--max-age-days N]`: send the reviewers' email
notifications that are still unsent (the mail server was down). With a Celery broker, the task's
retries and the beat sweep do this (docs/notifications.md)."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing.notifications import SWEEP_MAX_AGE, notifications_send_pending


class Command(BaseCommand):
    help = "Send the reviewers' email notifications that are still unsent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-age-days",
            type=int,
            default=SWEEP_MAX_AGE.days,
            help="only those recorded this many days ago or since",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sent, failed = notifications_send_pending(max_age=timedelta(days=options["max_age_days"]))
        self.stdout.write(f"notifications: {sent} sent, {failed} failed")
        if failed:
            sys.exit(1)
