"""`python manage.py verify_kit FILE.zip`: verify a settlement's kit offline (docs/verification.md).
Exit 0 printing `kit verified: N lines, total X CUR`, or 1 naming the first digest or line that
differs. It never touches the database: the kit is all it reads."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.kit_check import KitError, kit_verify


class Command(BaseCommand):
    help = "Verify a settlement's verification kit offline, with no database."
    # The system checks may look at the database; an auditor's machine has none.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the kit, as GET /api/v1/settlements/{id}/kit gave it")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = kit_verify(options["file"])
        except KitError as exc:
            raise CommandError(f"kit unreadable: {exc}") from exc
        if result.problems:
            for problem in result.problems:
                self.stderr.write(problem)
            raise CommandError(f"kit NOT verified: {result.problems[0]}")
        self.stdout.write(
            f"kit verified: {result.lines} lines, total {result.total} {result.currency}"
        )
