"""Test support: emptying the books, which the triggers otherwise forbid.

Django's transactional tests (`django_db(transaction=True)`) end with a flush that TRUNCATEs every
table, and `ledger_refuse_truncate` refuses that while the books hold an entry. A test that
committed ledger entries calls `books_wipe()` before the flush (tests/ledger/conftest.py does it
for every transactional test there; other apps' conftests can do the same).
"""

from __future__ import annotations

from django.db import connections


def books_wipe(*, using: str = "default") -> None:
    """Empty the ledger tables with the triggers switched off. Needs a superuser connection, as
    the test database's is; never call it outside tests."""
    with connections[using].cursor() as cursor:
        # replica: ordinary triggers, the TRUNCATE guards among them, do not fire in this session.
        cursor.execute("SET session_replication_role = replica")
        try:
            # CASCADE: other apps' tables that point at entries or accounts are emptied too (the
            # flush that follows empties them anyway).
            cursor.execute("TRUNCATE ledger_posting, ledger_journalentry, ledger_account CASCADE")
        finally:
            cursor.execute("RESET session_replication_role")
