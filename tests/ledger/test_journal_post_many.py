"""journal_post_many: a batch in one round trip, contiguous on the chain, idempotent per key,
all or nothing; and journal_post, a batch of one, without a savepoint when nested."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from ledger.models import Account, JournalEntry, Posting
from ledger.services import (
    EntrySpec,
    IdempotencyConflict,
    PostingSpec,
    UnbalancedEntry,
    journal_post,
    journal_post_many,
)
from ledger.verify import verify_books
from tests.ledger.conftest import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def _spec(
    usd: dict[str, Account], key: str, amount: int = 1250, memo: str = "bulk", fee: int = 0
) -> EntrySpec:
    legs = [
        PostingSpec(account=usd["receivable"], amount_minor=amount),
        PostingSpec(account=usd["payable"], amount_minor=-(amount - fee)),
    ]
    if fee:
        legs.append(PostingSpec(account=usd["revenue"], amount_minor=-fee))
    return EntrySpec(
        idempotency_key=key, memo=memo, postings=legs, reference_type="payout", reference_id=key
    )


def _chain() -> list[tuple[int, str, str, object]]:
    return list(
        JournalEntry.objects.order_by("sequence").values_list(
            "sequence", "prev_hash", "hash", "created_at"
        )
    )


def test_it_chains_a_batch_contiguously_after_the_head_and_verify_ledger_is_clean(usd):
    # given: books holding one entry
    first = journal_post(
        idempotency_key="before",
        memo="m",
        postings=_spec(usd, "x").postings,
        reference_type="settlement",
    )
    specs = [_spec(usd, f"bulk-{n}", amount=100 + n, fee=n % 3) for n in range(25)]
    # when: 25 entries are posted in one call
    with CaptureQueriesContext(connection) as queries:
        entries = journal_post_many(entries=specs)
    # then: one statement between BEGIN and COMMIT; they follow the head in the order given,
    # each linked to the one before, created_at never decreasing, and what the call returned is
    # what was stored
    assert [q["sql"].split(" ")[0] for q in queries] == ["BEGIN", "SELECT", "COMMIT"]
    assert [e.idempotency_key for e in entries] == [s.idempotency_key for s in specs]
    assert [e.sequence for e in entries] == list(range(2, 27))
    assert entries[0].prev_hash == first.hash
    chain = _chain()
    assert all(chain[i][1] == chain[i - 1][2] for i in range(1, len(chain)))
    assert all(chain[i][3] >= chain[i - 1][3] for i in range(1, len(chain)))  # type: ignore[operator]
    stored = {e.pk: e for e in JournalEntry.objects.all()}
    for entry in entries:
        same = stored[entry.pk]
        assert (same.hash, same.prev_hash, same.created_at) == (
            entry.hash,
            entry.prev_hash,
            entry.created_at,
        )
    assert sorted(Posting.objects.filter(entry=entries[4]).values_list("amount", flat=True)) == [
        -103,
        -1,
        104,
    ]
    # and every hash is the one verify_ledger recomputes in Python
    report = verify_books()
    assert report.ok, report.problems
    assert (report.entries, report.head_sequence) == (26, 26)


def test_it_returns_the_same_entries_for_a_replayed_batch(usd):
    # given: a posted batch
    specs = [_spec(usd, f"replay-{n}", amount=10 + n) for n in range(5)]
    posted = journal_post_many(entries=specs)
    # when: the same batch is sent again, then a batch mixing two of it with a new entry
    again = journal_post_many(entries=specs)
    mixed = journal_post_many(entries=[specs[3], _spec(usd, "replay-new"), specs[0]])
    # then: the replays are the stored entries, and only the new entry was written, at the head
    assert [e.pk for e in again] == [e.pk for e in posted]
    assert [e.hash for e in again] == [e.hash for e in posted]
    assert [mixed[0].pk, mixed[2].pk] == [posted[3].pk, posted[0].pk]
    assert mixed[1].sequence == 6 and mixed[1].prev_hash == posted[-1].hash
    assert JournalEntry.objects.count() == 6
    assert Posting.objects.count() == 12


def test_it_refuses_a_batch_with_one_conflicting_key_and_writes_nothing(usd):
    # given: an entry under the key "taken"
    journal_post_many(entries=[_spec(usd, "taken", amount=500)])
    batch = [_spec(usd, "fresh-1"), _spec(usd, "taken", amount=999), _spec(usd, "fresh-2")]
    # when: a batch reuses that key for another amount, inside the caller's transaction
    with transaction.atomic():
        with pytest.raises(IdempotencyConflict, match=r"'taken' was already used .* postings"):
            journal_post_many(entries=batch)
        # then: the caller's transaction is still usable, and nothing of the batch was written
        assert JournalEntry.objects.count() == 1
    # and outside any transaction as well
    with pytest.raises(IdempotencyConflict):
        journal_post_many(entries=batch)
    assert list(JournalEntry.objects.values_list("idempotency_key", flat=True)) == ["taken"]
    assert verify_books().ok


def test_it_refuses_an_unbalanced_entry_in_a_batch_before_writing_anything(usd):
    # given: a batch whose third entry does not balance
    unbalanced = EntrySpec(
        idempotency_key="unbalanced",
        memo="",
        postings=[
            PostingSpec(account=usd["receivable"], amount_minor=100),
            PostingSpec(account=usd["payable"], amount_minor=-99),
        ],
        reference_type="payout",
    )
    batch = [_spec(usd, "ok-1"), _spec(usd, "ok-2"), unbalanced, _spec(usd, "ok-3")]
    # when / then: it is refused without a single query
    with CaptureQueriesContext(connection) as queries:
        with pytest.raises(UnbalancedEntry, match="sum to \\+1 USD"):
            journal_post_many(entries=batch)
    assert len(queries) == 0
    assert not JournalEntry.objects.exists()


def test_it_refuses_a_key_twice_in_one_batch(usd):
    # given: a batch with one key twice
    batch = [_spec(usd, "twice"), _spec(usd, "once"), _spec(usd, "twice")]
    # when / then: it is refused before anything is written
    with pytest.raises(ValueError, match="once per batch: twice"):
        journal_post_many(entries=batch)
    assert not JournalEntry.objects.exists()


def test_it_posts_nothing_for_an_empty_batch(usd):
    # given / when: an empty batch
    with CaptureQueriesContext(connection) as queries:
        entries = journal_post_many(entries=[])
    # then: no query, no entry
    assert entries == [] and len(queries) == 0


def test_it_keeps_one_linear_chain_under_concurrent_batches(usd):
    # given: four threads, each on its own connection, each with five batches of ten entries
    def work(i: int) -> list[list[int]]:
        return [
            [
                e.sequence
                for e in journal_post_many(
                    entries=[_spec(usd, f"t{i}-b{b}-{n}", amount=1 + n) for n in range(10)]
                )
            ]
            for b in range(5)
        ]

    # when: they post at once
    results = run_in_threads(4, work)
    # then: 200 entries at sequences 1..200, one line, and each batch is contiguous
    assert all(isinstance(r, list) for r in results), results
    for batches in results:
        for sequences in batches:
            assert sequences == list(range(sequences[0], sequences[0] + 10))
    chain = _chain()
    assert [s for s, *_ in chain] == list(range(1, 201))
    assert all(chain[i][1] == chain[i - 1][2] for i in range(1, len(chain)))
    assert all(chain[i][3] >= chain[i - 1][3] for i in range(1, len(chain)))  # type: ignore[operator]
    assert verify_books().ok


def test_it_makes_one_entry_per_key_when_threads_post_overlapping_batches(usd):
    # given: four threads whose batches share the keys "shared-0".."shared-4", each with one
    # key of its own
    def work(i: int) -> list[int]:
        specs = [_spec(usd, f"shared-{n}") for n in range(5)] + [_spec(usd, f"own-{i}")]
        return [e.pk for e in journal_post_many(entries=specs)]

    # when: they post at once
    results = run_in_threads(4, work)
    # then: every thread got the same five shared entries; nine entries in all, one chain
    assert all(isinstance(r, list) for r in results), results
    assert len({tuple(r[:5]) for r in results}) == 1
    assert JournalEntry.objects.count() == 9
    assert verify_books().ok


def test_it_posts_one_entry_without_a_savepoint_in_the_callers_transaction(usd):
    # given: a caller's transaction
    with transaction.atomic():
        # when: journal_post posts an entry, then is refused twice (a conflict, an unbalanced
        # entry)
        with CaptureQueriesContext(connection) as queries:
            entry = journal_post(
                idempotency_key="nested",
                memo="m",
                postings=_spec(usd, "x").postings,
                reference_type="settlement",
            )
        with pytest.raises(IdempotencyConflict):
            journal_post(
                idempotency_key="nested",
                memo="other",
                postings=_spec(usd, "x").postings,
                reference_type="settlement",
            )
        with pytest.raises(UnbalancedEntry):
            journal_post(
                idempotency_key="nested-2",
                memo="m",
                postings=_spec(usd, "x", amount=0).postings[:1],
                reference_type="settlement",
            )
        # then: the post was one query and no savepoint, and the caller's transaction is still
        # usable after both refusals
        assert [q["sql"].split("(")[0] for q in queries] == [
            "SELECT entry_id, created, entry_sequence, entry_created_at, entry_prev_hash,"
            " entry_hash FROM ledger_post_entry"
        ]
        assert JournalEntry.objects.get().pk == entry.pk
    assert JournalEntry.objects.count() == 1


@pytest.mark.parametrize(
    "text",
    ['quote " backslash \\ brace { } comma , "NULL"', "NULL", "", "  padded  ", "Gebühr — 東京\n"],
)
def test_it_stores_the_text_of_each_entry_exactly_as_given(usd, text):
    # given: memos and references full of what an array literal must escape
    specs = [
        EntrySpec(
            idempotency_key=f"text-{n}:{text}",
            memo=text,
            postings=_spec(usd, "x").postings,
            reference_type="payout",
            reference_id=text,
        )
        for n in range(2)
    ]
    # when: they are posted in one call
    entries = journal_post_many(entries=specs)
    # then: the stored text is the given text, the chain verifies, and a replay matches
    stored = JournalEntry.objects.order_by("sequence")
    assert [(e.idempotency_key, e.memo, e.reference_id) for e in stored] == [
        (s.idempotency_key, text, text) for s in specs
    ]
    assert verify_books().ok
    assert [e.pk for e in journal_post_many(entries=specs)] == [e.pk for e in entries]
