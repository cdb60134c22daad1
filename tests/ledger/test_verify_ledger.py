"""manage.py verify_ledger: clean books pass; rows altered behind the triggers are named."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ledger.models import Account, JournalEntry
from ledger.services import PostingSpec, journal_post, journal_reverse

pytestmark = pytest.mark.django_db(transaction=True)


def _post_three(usd: dict[str, Account]) -> list[JournalEntry]:
    entries = [
        journal_post(
            idempotency_key=f"e{n}",
            memo=f"entry {n}",
            postings=[
                PostingSpec(account=usd["receivable"], amount_minor=100 * n),
                PostingSpec(account=usd["payable"], amount_minor=-100 * n),
            ],
            reference_type="settlement",
            reference_id=str(n),
        )
        for n in (1, 2, 3)
    ]
    journal_reverse(entry=entries[0], reason="test")
    return entries


def _behind_the_triggers(sql: str, params: list[object]) -> None:
    """Change a row as a superuser can: with session_replication_role = replica, ordinary
    triggers do not fire."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(sql, params)
        finally:
            cursor.execute("RESET session_replication_role")


def _verify() -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("verify_ledger", stdout=out)
    except CommandError as exc:
        return exc.returncode, f"{out.getvalue()}\n{exc}"
    return 0, out.getvalue()


def test_it_passes_clean_books(usd):
    # given: three entries and a reversal
    _post_three(usd)
    # when: the books are verified
    status, out = _verify()
    # then: exit 0, four entries, a zero trial balance
    assert status == 0, out
    assert "4 entries, 8 postings" in out
    assert "trial balance USD: 0" in out
    assert "OK" in out


def test_it_names_an_entry_whose_posting_was_altered(usd):
    # given: the second entry's debit doubled behind the triggers
    entries = _post_three(usd)
    second = entries[1]
    _behind_the_triggers(
        "UPDATE ledger_posting SET amount = amount * 2 WHERE entry_id = %s AND amount > 0",
        [second.pk],
    )
    # when: the books are verified
    status, out = _verify()
    # then: exit 1, naming that entry as the first bad row (unbalanced, and its hash broken)
    assert status == 1
    assert f"first bad row: journal entry id={second.pk} sequence={second.sequence}" in out
    assert "does not balance: USD sums to 200" in out
    assert "does not match its content" in out
    assert "trial balance: USD balances sum to 200" in out


def test_it_names_an_entry_whose_memo_was_altered(usd):
    # given: the third entry's memo edited behind the triggers (every balance still holds)
    entries = _post_three(usd)
    third = entries[2]
    _behind_the_triggers(
        "UPDATE ledger_journalentry SET memo = 'nothing to see' WHERE id = %s", [third.pk]
    )
    # when: the books are verified
    status, out = _verify()
    # then: only the chain catches it, and it names the row
    assert status == 1
    assert f"first bad row: journal entry id={third.pk} sequence={third.sequence}: hash" in out


def test_it_names_the_gap_left_by_a_deleted_entry(usd):
    # given: the second entry and its postings deleted behind the triggers
    entries = _post_three(usd)
    second = entries[1]
    _behind_the_triggers("DELETE FROM ledger_posting WHERE entry_id = %s", [second.pk])
    _behind_the_triggers("DELETE FROM ledger_journalentry WHERE id = %s", [second.pk])
    # when: the books are verified
    status, out = _verify()
    # then: the entry after the gap is named
    third = entries[2]
    assert status == 1
    assert f"first bad row: journal entry id={third.pk} sequence={third.sequence}" in out
    assert "sequence 3 where 2 was expected" in out
