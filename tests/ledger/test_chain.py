"""ledger.chain: the hash is reproducible, covers every part of an entry, and PostgreSQL's
digest (ledger_post_entry) is the one Python recomputes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ledger.chain import (
    GENESIS_HASH,
    ChainPosting,
    EntryContent,
    canonical_content,
    entry_hash,
)
from ledger.models import JournalEntry
from ledger.services import PostingSpec, journal_post

CONTENT = EntryContent(
    idempotency_key="settlement:1:accrual",
    memo="Settlement 1 approved — ünïcode",
    reference_type="settlement",
    reference_id="1",
    reverses_id=None,
    postings=(
        ChainPosting(account_id=2, currency="USD", amount=-900),
        ChainPosting(account_id=1, currency="USD", amount=1000),
        ChainPosting(account_id=3, currency="USD", amount=-100),
    ),
)
AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _hash(content: EntryContent = CONTENT, **override: object) -> str:
    arguments: dict[str, object] = {
        "prev_hash": GENESIS_HASH,
        "sequence": 1,
        "created_at": AT,
        "content": canonical_content(content),
    }
    arguments.update(override)
    return entry_hash(**arguments)  # type: ignore[arg-type]


def test_it_hashes_the_same_entry_to_the_same_digest_whatever_the_posting_order():
    # given: the content with its postings in another order, and the time in another zone
    shuffled = dataclasses.replace(CONTENT, postings=tuple(reversed(CONTENT.postings)))
    elsewhere = AT.astimezone(timezone(timedelta(hours=2)))
    # when: both are hashed
    # then: the digests agree, and the canonical form is sorted, compact, ASCII JSON
    assert _hash(shuffled, created_at=elsewhere) == _hash()
    text = canonical_content(CONTENT)
    assert '"postings":[[1,"USD",1000],[2,"USD",-900],[3,"USD",-100]]' in text
    assert text.isascii() and "\\u00fc" in text


@pytest.mark.parametrize(
    "change",
    [
        {"idempotency_key": "other"},
        {"memo": "other"},
        {"reference_type": "invoice"},
        {"reference_id": "2"},
        {"reverses_id": 5},
        {"postings": (ChainPosting(1, "USD", 1), ChainPosting(2, "USD", -1))},
    ],
)
def test_it_changes_the_hash_when_any_content_changes(change):
    # given: the content with one field changed
    changed = dataclasses.replace(CONTENT, **change)
    # when / then: its hash differs
    assert _hash(changed) != _hash()


@pytest.mark.parametrize(
    "override",
    [
        {"prev_hash": "1" * 64},
        {"sequence": 2},
        {"created_at": AT + timedelta(microseconds=1)},
    ],
)
def test_it_changes_the_hash_with_the_chain_position_and_time(override):
    # given / when: the same content at another place in the chain or another time
    # then: the digest differs, so a rewritten past breaks every later link
    assert _hash(**override) != _hash()


def test_it_refuses_a_naive_timestamp():
    # given: a created_at without a zone
    # when / then: hashing it is refused rather than guessed
    with pytest.raises(ValueError, match="timezone-aware"):
        _hash(created_at=datetime(2026, 3, 1))  # noqa: DTZ001


@pytest.mark.django_db(transaction=True)
def test_it_stores_the_digest_python_recomputes_from_the_row(usd):
    # given: an entry with a non-ASCII memo, hashed by PostgreSQL under the chain lock
    entry = journal_post(
        idempotency_key="unicode",
        memo="Lizenzgebühr für März — 東京",
        postings=[
            PostingSpec(account=usd["receivable"], amount_minor=123),
            PostingSpec(account=usd["payable"], amount_minor=-123),
        ],
        reference_type="settlement",
        reference_id="42",
    )
    # when: the digest is recomputed in Python from the stored row
    stored = JournalEntry.objects.get(pk=entry.pk)
    content = EntryContent(
        idempotency_key=stored.idempotency_key,
        memo=stored.memo,
        reference_type=stored.reference_type,
        reference_id=stored.reference_id,
        reverses_id=stored.reverses_id,
        postings=tuple(
            ChainPosting(account_id=p.account_id, currency=p.currency, amount=p.amount)
            for p in stored.postings.all()
        ),
    )
    recomputed = entry_hash(
        prev_hash=stored.prev_hash,
        sequence=stored.sequence,
        created_at=stored.created_at,
        content=canonical_content(content),
    )
    # then: it is the stored digest, and what journal_post returned
    assert recomputed == stored.hash == entry.hash
    assert stored.prev_hash == GENESIS_HASH and stored.sequence == 1
