"""journal_reverse: a mirror entry, once per entry, even under concurrency."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from ledger.chain import ChainPosting
from ledger.models import Account, JournalEntry
from ledger.selectors import account_balance
from ledger.services import AlreadyReversed, PostingSpec, journal_post, journal_reverse
from ledger.services import _Content as Content
from ledger.services import _post as post_internal
from tests.ledger.conftest import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def _post(usd: dict[str, Account]) -> JournalEntry:
    return journal_post(
        idempotency_key="original",
        memo="accrual",
        postings=[
            PostingSpec(account=usd["receivable"], amount_minor=700),
            PostingSpec(account=usd["payable"], amount_minor=-600),
            PostingSpec(account=usd["revenue"], amount_minor=-100),
        ],
        reference_type="settlement",
        reference_id="s-9",
    )


def test_it_posts_the_mirror_image_and_brings_balances_back(usd):
    # given: a posted entry
    original = _post(usd)
    # when: it is reversed
    reversal = journal_reverse(entry=original, reason="wrong month")
    # then: the reversal negates every leg and every balance is back to zero
    assert reversal.reverses_id == original.pk
    assert reversal.reference_type == "reversal" and "wrong month" in reversal.memo
    assert sorted(reversal.postings.values_list("amount", flat=True)) == [-700, 100, 600]
    assert [account_balance(account=a) for a in usd.values()] == [0, 0, 0, 0]


def test_it_returns_the_same_reversal_on_a_retry_and_refuses_a_second_one(usd):
    # given: a reversed entry
    original = _post(usd)
    reversal = journal_reverse(entry=original, reason="duplicate invoice")
    # when: the same reversal is retried, then another reason is given
    retried = journal_reverse(entry=original, reason="duplicate invoice")
    # then: the retry is the same entry, the second reversal is refused
    assert retried.pk == reversal.pk
    with pytest.raises(AlreadyReversed, match="already reversed"):
        journal_reverse(entry=original, reason="another reason")
    assert JournalEntry.objects.filter(reverses=original).count() == 1


def test_it_lets_exactly_one_of_two_concurrent_reversals_succeed(usd):
    # given: a posted entry and two threads, each on its own connection
    original = _post(usd)
    # when: both reverse it at once, for different reasons
    results = run_in_threads(2, lambda i: journal_reverse(entry=original, reason=f"reason {i}"))
    # then: one reversal exists; the other caller got AlreadyReversed
    succeeded = [r for r in results if isinstance(r, JournalEntry)]
    refused = [r for r in results if isinstance(r, AlreadyReversed)]
    assert (len(succeeded), len(refused)) == (1, 1), results
    assert JournalEntry.objects.filter(reverses=original).count() == 1


def test_it_refuses_a_second_reversal_even_when_the_python_check_is_skipped(usd):
    # given: a reversed entry
    original = _post(usd)
    journal_reverse(entry=original, reason="first")
    # when: a second reversal is posted through the internal path, past journal_reverse's check
    content = Content(
        memo="second",
        reference_type="reversal",
        reference_id=str(original.pk),
        reverses_id=original.pk,
        postings=tuple(
            ChainPosting(account_id=p.account_id, currency=p.currency, amount=-p.amount)
            for p in original.postings.all()
        ),
    )
    # then: the unique constraint on `reverses` refuses it
    with pytest.raises(IntegrityError, match="ledger_journalentry_reverses_id_key"):
        with transaction.atomic():
            post_internal(idempotency_key="second-reversal", content=content)
    assert JournalEntry.objects.filter(reverses=original).count() == 1
