"""The audit chain: what an entry's hash covers. Pure (no Django, no I/O).

journal_post builds an entry's canonical content here; PostgreSQL (`ledger_post_entry`,
migration 0003, or `ledger_post_entries` for a batch, migration 0004) hashes it under the chain
lock together with the previous hash, the sequence and created_at, which only exist once the
lock is held; `manage.py verify_ledger` recomputes the same digest here from the stored rows.
Both sides hash exactly these bytes:

    prev_hash "\\n" sequence "\\n" created_at "\\n" content

with prev_hash the previous entry's hex digest (64 zeros for sequence 1), sequence in decimal,
created_at in UTC as 2026-03-01T12:00:00.123456Z (always microseconds: PostgreSQL keeps exactly
that), and content a JSON object with sorted keys, no whitespace and ASCII only (so that no
encoding can differ) holding the chain version, idempotency key, memo, reference, reversed entry
id and the postings sorted by (account id, currency, amount), each [account_id, currency,
amount in minor units]. Change none of it without a new CHAIN_VERSION.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

CHAIN_VERSION = 1
# The prev_hash of the first entry (sequence 1).
GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class ChainPosting:
    account_id: int
    currency: str
    amount: int  # signed integer minor units


@dataclass(frozen=True)
class EntryContent:
    """What the content covers: everything about an entry but its chain position and time."""

    idempotency_key: str
    memo: str
    reference_type: str
    reference_id: str
    reverses_id: int | None
    postings: tuple[ChainPosting, ...]


def sorted_postings(postings: Iterable[ChainPosting]) -> tuple[ChainPosting, ...]:
    return tuple(sorted(postings, key=lambda p: (p.account_id, p.currency, p.amount)))


def canonical_timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_content(entry: EntryContent) -> str:
    document = {
        "v": CHAIN_VERSION,
        "key": entry.idempotency_key,
        "memo": entry.memo,
        "reference_type": entry.reference_type,
        "reference_id": entry.reference_id,
        "reverses": entry.reverses_id,
        "postings": [[p.account_id, p.currency, p.amount] for p in sorted_postings(entry.postings)],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(*, prev_hash: str, sequence: int, created_at: datetime, content: str) -> str:
    """Hex SHA-256 of the previous hash, the chain position, the time and the content."""
    head = f"{prev_hash}\n{sequence}\n{canonical_timestamp(created_at)}\n"
    return hashlib.sha256((head + content).encode("utf-8")).hexdigest()
