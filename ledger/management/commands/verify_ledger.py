"""`python manage.py verify_ledger`: recompute the books and the audit chain; exit 0 or 1."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ledger.verify import verify_books


class Command(BaseCommand):
    help = (
        "Recompute every entry's balance, the trial balance per currency and the audit chain; "
        "name the first bad row and exit 1 if anything is wrong."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = verify_books()
        self.stdout.write(
            f"ledger: {report.entries} entries, {report.postings} postings, "
            f"{report.accounts} accounts"
        )
        for currency, total in report.totals.items():
            self.stdout.write(f"trial balance {currency}: {total} minor units")
        self.stdout.write(f"chain head: sequence {report.head_sequence} hash {report.head_hash}")
        first = report.first_problem
        if first is None:
            self.stdout.write(self.style.SUCCESS("OK: every entry balances and the chain holds"))
            return
        for problem in report.problems:
            self.stdout.write(f"  problem: {problem}")
        raise CommandError(f"first bad row: {first}", returncode=1)
