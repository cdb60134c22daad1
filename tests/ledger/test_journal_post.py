"""journal_post: balanced entries, idempotency (also under concurrency) and the chain."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from ledger.chain import GENESIS_HASH
from ledger.models import Account, JournalEntry, Posting
from ledger.services import (
    IdempotencyConflict,
    PostingSpec,
    UnbalancedEntry,
    journal_post,
)
from tests.ledger.conftest import insert_raw_entry, run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def _legs(usd: dict[str, Account], amount: int = 1250) -> list[PostingSpec]:
    return [
        PostingSpec(account=usd["receivable"], amount_minor=amount),
        PostingSpec(account=usd["payable"], amount_minor=-amount),
    ]


def _post(usd: dict[str, Account], key: str, amount: int = 1250, memo: str = "m") -> JournalEntry:
    return journal_post(
        idempotency_key=key,
        memo=memo,
        postings=_legs(usd, amount),
        reference_type="settlement",
        reference_id="s-1",
    )


def test_it_posts_a_balanced_entry_at_the_head_of_the_chain(usd):
    # given: empty books
    # when: two entries are posted
    first = _post(usd, "a")
    second = _post(usd, "b")
    # then: they are stored with their postings and linked in order
    assert first.sequence == 1 and first.prev_hash == GENESIS_HASH
    assert second.sequence == 2 and second.prev_hash == first.hash
    stored = JournalEntry.objects.get(pk=second.pk)
    assert (stored.hash, stored.created_at) == (second.hash, second.created_at)
    assert sorted(stored.postings.values_list("amount", "currency")) == [
        (-1250, "USD"),
        (1250, "USD"),
    ]


def test_it_returns_the_existing_entry_for_the_same_key_and_content(usd):
    # given: a posted entry
    first = _post(usd, "same")
    # when: the same post is sent again (a retry)
    again = _post(usd, "same")
    # then: it is the same entry, and nothing new was written
    assert again.pk == first.pk
    assert JournalEntry.objects.count() == 1
    assert Posting.objects.count() == 2


def test_it_refuses_the_same_key_with_other_content(usd):
    # given: a posted entry
    _post(usd, "reused", amount=1250)
    # when / then: the key is reused for another amount, with an error naming what differs
    with pytest.raises(IdempotencyConflict, match=r"'reused' was already used .* postings"):
        _post(usd, "reused", amount=9999)
    with pytest.raises(IdempotencyConflict, match="memo"):
        _post(usd, "reused", memo="other")
    assert JournalEntry.objects.count() == 1


@pytest.mark.parametrize(
    ("amounts", "error"),
    [
        ([100, -99], "sum to \\+1 USD"),
        ([100, 0, -100], "zero"),
        ([100], "at least two"),
    ],
)
def test_it_refuses_invalid_postings_before_writing(usd, amounts, error):
    # given: postings that cannot make an entry
    accounts = [usd["receivable"], usd["payable"], usd["cash"]]
    legs = [PostingSpec(account=a, amount_minor=m) for a, m in zip(accounts, amounts, strict=False)]
    # when / then: journal_post refuses them with a clear error
    with pytest.raises(UnbalancedEntry, match=error):
        journal_post(idempotency_key="bad", memo="", postings=legs, reference_type="settlement")
    assert not JournalEntry.objects.exists()


def test_it_refuses_a_posting_in_the_wrong_currency_through_the_orm(usd, parties):
    # given: an entry, and a posting on a USD account that claims EUR, written through the ORM
    # when / then: the currency trigger refuses it
    with pytest.raises(IntegrityError, match="whose currency is USD"):
        with transaction.atomic():
            with connection.cursor() as cursor:
                entry_id = insert_raw_entry(cursor, "orm-eur")
            Posting.objects.create(
                entry_id=entry_id, account=usd["receivable"], amount=5, currency="EUR"
            )
    assert not JournalEntry.objects.exists()


def test_it_makes_one_entry_when_eight_threads_post_the_same_key(usd):
    # given: eight threads, each on its own connection, ready to post the same key
    # when: they post at once
    results = run_in_threads(8, lambda i: _post(usd, "concurrent").pk)
    # then: every one got the same entry, and there is one entry of two postings
    assert all(isinstance(r, int) for r in results), results
    assert len(set(results)) == 1
    assert JournalEntry.objects.count() == 1
    assert Posting.objects.count() == 2


def test_it_keeps_the_chain_linear_under_concurrent_posters(usd):
    # given: eight threads posting different keys at once
    # when: each posts five entries
    def work(i: int) -> int:
        for n in range(5):
            _post(usd, f"t{i}-{n}")
        return i

    results = run_in_threads(8, work)
    # then: forty entries at sequences 1..40, each linked to the one before
    assert results == list(range(8))
    chain = list(
        JournalEntry.objects.order_by("sequence").values_list("sequence", "prev_hash", "hash")
    )
    assert [s for s, _, _ in chain] == list(range(1, 41))
    assert all(chain[i][1] == chain[i - 1][2] for i in range(1, len(chain)))
