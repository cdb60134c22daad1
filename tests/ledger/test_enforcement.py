"""Every rule of the books, broken on purpose by raw SQL: PostgreSQL must refuse each one,
whatever the client (docs/ledger.md, "What PostgreSQL enforces")."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from ledger.models import Account, JournalEntry, Posting
from ledger.services import PostingSpec, journal_post
from tests.ledger.conftest import insert_raw_entry

pytestmark = pytest.mark.django_db(transaction=True)


def _post(usd: dict[str, Account], key: str = "k1", amount: int = 1000) -> JournalEntry:
    return journal_post(
        idempotency_key=key,
        memo="test",
        postings=[
            PostingSpec(account=usd["receivable"], amount_minor=amount),
            PostingSpec(account=usd["payable"], amount_minor=-amount),
        ],
        reference_type="settlement",
        reference_id=key,
    )


def _insert_posting(cursor: object, entry_id: int, account: Account, amount: int) -> None:
    cursor.execute(  # type: ignore[attr-defined]
        "INSERT INTO ledger_posting (entry_id, account_id, amount, currency)"
        " VALUES (%s, %s, %s, %s)",
        [entry_id, account.pk, amount, account.currency],
    )


def test_it_refuses_an_unbalanced_entry_at_commit_with_a_named_error(usd):
    # given: an entry whose two postings sum to +1 cent, inserted by raw SQL
    inserted = False
    # when: the transaction commits
    with pytest.raises(IntegrityError, match=r"ledger: journal entry \d+ does not balance in USD"):
        with transaction.atomic(), connection.cursor() as cursor:
            entry_id = insert_raw_entry(cursor, "unbalanced")
            _insert_posting(cursor, entry_id, usd["receivable"], 1001)
            _insert_posting(cursor, entry_id, usd["payable"], -1000)
            inserted = True  # the inserts themselves pass: the check is deferred to commit
    # then: the inserts passed, the commit failed, and nothing was kept
    assert inserted
    assert not JournalEntry.objects.filter(idempotency_key="unbalanced").exists()


def test_it_refuses_an_entry_with_a_single_posting(usd):
    # given: an entry with one posting (it cannot balance unless it is zero, which is refused)
    # when / then: the commit fails
    with pytest.raises(IntegrityError, match=r"ledger: journal entry \d+ has 0 posting"):
        with transaction.atomic(), connection.cursor() as cursor:
            insert_raw_entry(cursor, "empty")
    assert not JournalEntry.objects.filter(idempotency_key="empty").exists()


def test_it_checks_a_leg_added_after_set_constraints_immediate(usd):
    # given: a balanced entry checked early by SET CONSTRAINTS ... IMMEDIATE
    with pytest.raises(IntegrityError, match="does not balance in USD"):
        with transaction.atomic(), connection.cursor() as cursor:
            entry_id = insert_raw_entry(cursor, "late-leg")
            _insert_posting(cursor, entry_id, usd["receivable"], 500)
            _insert_posting(cursor, entry_id, usd["payable"], -500)
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            # when: one more leg is added afterwards
            _insert_posting(cursor, entry_id, usd["cash"], 7)
    # then: the extra leg was still checked and nothing was kept
    assert not JournalEntry.objects.filter(idempotency_key="late-leg").exists()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_posting SET amount = amount * 2",
        "UPDATE ledger_journalentry SET memo = 'edited'",
        "UPDATE ledger_account SET currency = 'EUR'",
        "DELETE FROM ledger_posting",
        "DELETE FROM ledger_journalentry",
        "DELETE FROM ledger_account",
    ],
)
def test_it_refuses_update_and_delete(usd, statement):
    # given: a posted entry
    entry = _post(usd)
    # when: a raw UPDATE or DELETE touches the books
    with pytest.raises(IntegrityError, match=r"ledger: (UPDATE|DELETE) on ledger_\w+ is refused"):
        with connection.cursor() as cursor:
            cursor.execute(statement)
    # then: the entry is as it was
    assert list(entry.postings.values_list("amount", flat=True).order_by("amount")) == [-1000, 1000]
    assert JournalEntry.objects.get(pk=entry.pk).memo == "test"


@pytest.mark.parametrize("table", ["ledger_posting", "ledger_journalentry", "ledger_account"])
def test_it_refuses_truncate_while_the_books_hold_an_entry(usd, table):
    # given: a posted entry
    _post(usd)
    # when: a table of the books is truncated
    with pytest.raises(IntegrityError, match=r"ledger: TRUNCATE on ledger_\w+ is refused"):
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {table} CASCADE")
    # then: nothing was lost
    assert Posting.objects.count() == 2


def test_it_refuses_a_zero_posting(usd):
    # given: an entry by raw SQL with a zero leg beside a balanced pair
    # when / then: the check constraint refuses the zero at once
    with pytest.raises(IntegrityError, match="ledger_posting_amount_not_zero"):
        with transaction.atomic(), connection.cursor() as cursor:
            entry_id = insert_raw_entry(cursor, "zero")
            _insert_posting(cursor, entry_id, usd["receivable"], 0)
    assert not JournalEntry.objects.filter(idempotency_key="zero").exists()


def test_it_refuses_a_posting_in_another_currency_than_its_account(usd):
    # given: an entry by raw SQL
    # when: a posting in EUR is made on a USD account
    refused = r"ledger: posting in EUR on account \d+ whose currency is USD"
    with pytest.raises(IntegrityError, match=refused):
        with transaction.atomic(), connection.cursor() as cursor:
            entry_id = insert_raw_entry(cursor, "wrong-currency")
            cursor.execute(
                "INSERT INTO ledger_posting (entry_id, account_id, amount, currency)"
                " VALUES (%s, %s, 100, 'EUR'), (%s, %s, -100, 'EUR')",
                [entry_id, usd["receivable"].pk, entry_id, usd["payable"].pk],
            )
    # then: nothing was kept
    assert not JournalEntry.objects.filter(idempotency_key="wrong-currency").exists()


def test_it_refuses_a_posting_added_to_an_entry_committed_earlier(usd):
    # given: a committed entry
    entry = _post(usd)
    # when: a later transaction adds a balanced pair of legs to it
    with pytest.raises(IntegrityError, match=r"was posted by an earlier transaction"):
        with transaction.atomic(), connection.cursor() as cursor:
            _insert_posting(cursor, entry.pk, usd["cash"], 5)
            _insert_posting(cursor, entry.pk, usd["revenue"], -5)
    # then: the entry still has its two postings
    assert entry.postings.count() == 2


def test_it_refuses_an_entry_that_does_not_extend_the_chain(usd):
    # given: a posted entry, head of the chain
    head = _post(usd)
    # when: an entry claims the next sequence but names another previous hash
    with pytest.raises(IntegrityError, match=r"does not extend the chain: prev_hash"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ledger_journalentry (sequence, idempotency_key, memo,"
                " reference_type, reference_id, created_at, prev_hash, hash)"
                " VALUES (%s, 'fork', '', 'test', '', now(), %s, %s)",
                [head.sequence + 1, "b" * 64, "c" * 64],
            )
    # then: nothing was kept
    assert not JournalEntry.objects.filter(idempotency_key="fork").exists()


def test_it_refuses_a_reversal_that_does_not_undo_its_original(usd):
    # given: a posted entry of +1000 receivable / -1000 payable
    original = _post(usd)
    # when: a "reversal" by raw SQL moves the money to other accounts instead
    with pytest.raises(IntegrityError, match=r"does not undo entry \d+ that it reverses"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT head_sequence, head_hash FROM ledger_chain_head()")
            head_sequence, head_hash = cursor.fetchone()
            cursor.execute(
                "INSERT INTO ledger_journalentry (sequence, idempotency_key, memo,"
                " reference_type, reference_id, reverses_id, created_at, prev_hash, hash)"
                " VALUES (%s, 'bad-reversal', '', 'reversal', '', %s, now(), %s, %s)"
                " RETURNING id",
                [head_sequence + 1, original.pk, head_hash, "d" * 64],
            )
            entry_id = cursor.fetchone()[0]
            _insert_posting(cursor, entry_id, usd["cash"], -1000)
            _insert_posting(cursor, entry_id, usd["revenue"], 1000)
    # then: the original stands unreversed
    assert not JournalEntry.objects.filter(reverses=original).exists()


def test_it_refuses_a_second_account_for_the_same_owner_kind_and_currency(usd):
    # given: the platform's USD cash account (both owner columns null)
    # when: a second one is inserted by raw SQL
    with pytest.raises(IntegrityError, match="ledger_account_one_per_owner_kind_currency"):
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ledger_account (kind, currency, created_at)"
                " VALUES ('cash', 'USD', now())"
            )
    # then: there is still one
    assert Account.objects.filter(kind="cash", currency="USD").count() == 1


def test_it_refuses_an_account_whose_owner_does_not_fit_its_kind(usd):
    # given: a licensor
    licensor_id = usd["payable"].licensor_id
    # when: a licensor receivable is inserted by raw SQL
    with pytest.raises(IntegrityError, match="ledger_account_owner_matches_kind"):
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ledger_account (licensor_id, kind, currency, created_at)"
                " VALUES (%s, 'receivable', 'USD', now())",
                [licensor_id],
            )
    # then: the licensor has its payable only
    assert Account.objects.filter(licensor_id=licensor_id).count() == 1
