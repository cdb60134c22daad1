"""ledger.chain: the hash is reproducible and covers every part of an entry."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ledger.chain import GENESIS_HASH, ChainEntry, ChainPosting, canonical_content, entry_hash

ENTRY = ChainEntry(
    sequence=1,
    idempotency_key="settlement:1:accrual",
    memo="Settlement 1 approved — ünïcode",
    reference_type="settlement",
    reference_id="1",
    reverses_id=None,
    created_at=datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
    postings=(
        ChainPosting(account_id=2, currency="USD", amount=-900),
        ChainPosting(account_id=1, currency="USD", amount=1000),
        ChainPosting(account_id=3, currency="USD", amount=-100),
    ),
)


def test_it_hashes_the_same_entry_to_the_same_digest_whatever_the_posting_order():
    # given: the entry with its postings in another order and its time in another zone
    shuffled = dataclasses.replace(
        ENTRY,
        postings=tuple(reversed(ENTRY.postings)),
        created_at=ENTRY.created_at.astimezone(timezone(timedelta(hours=2))),
    )
    # when: both are hashed
    # then: the digests agree, and the canonical form is sorted, compact JSON
    assert entry_hash(GENESIS_HASH, shuffled) == entry_hash(GENESIS_HASH, ENTRY)
    assert b'"postings":[[1,"USD",1000],[2,"USD",-900],[3,"USD",-100]]' in canonical_content(ENTRY)
    assert b'"created_at":"2026-03-01T12:00:00.123456Z"' in canonical_content(ENTRY)


@pytest.mark.parametrize(
    "change",
    [
        {"sequence": 2},
        {"idempotency_key": "other"},
        {"memo": "other"},
        {"reference_type": "invoice"},
        {"reference_id": "2"},
        {"reverses_id": 5},
        {"created_at": datetime(2026, 3, 1, 12, 0, 0, 123457, tzinfo=UTC)},
        {"postings": (ChainPosting(1, "USD", 1), ChainPosting(2, "USD", -1))},
    ],
)
def test_it_changes_the_hash_when_any_field_changes(change):
    # given: the entry with one field changed
    changed = dataclasses.replace(ENTRY, **change)
    # when / then: its hash differs
    assert entry_hash(GENESIS_HASH, changed) != entry_hash(GENESIS_HASH, ENTRY)


def test_it_changes_the_hash_with_the_previous_hash():
    # given: the same entry after two different predecessors
    # when / then: the digests differ, so a rewritten past breaks every later link
    assert entry_hash("1" * 64, ENTRY) != entry_hash(GENESIS_HASH, ENTRY)


def test_it_refuses_a_naive_timestamp():
    # given: an entry whose created_at has no zone
    naive = dataclasses.replace(ENTRY, created_at=datetime(2026, 3, 1))  # noqa: DTZ001
    # when / then: hashing it is refused rather than guessed
    with pytest.raises(ValueError, match="timezone-aware"):
        entry_hash(GENESIS_HASH, naive)
