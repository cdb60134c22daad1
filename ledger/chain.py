"""The audit chain: how an entry's hash is computed. Pure (no Django, no I/O).

journal_post computes the hash here, in Python, under the chain lock; `manage.py verify_ledger`
recomputes it here from the stored rows. One function, used by both, is what makes the chain
reproducible: do not change the canonical form without a new `CHAIN_VERSION` and a migration
story for the old entries.

hash = SHA-256( prev_hash (64 hex chars, ASCII) || "\\n" || canonical content (UTF-8 JSON) )

The canonical content is a JSON object with sorted keys and no whitespace holding the chain
version, the sequence, the idempotency key, memo, reference, reversed entry id, created_at
(UTC, ISO 8601 with microseconds) and the postings sorted by (account id, currency, amount),
each as [account_id, currency, amount in minor units].
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
class ChainEntry:
    """What the hash covers: everything about an entry except its own hash and row id."""

    sequence: int
    idempotency_key: str
    memo: str
    reference_type: str
    reference_id: str
    reverses_id: int | None
    created_at: datetime
    postings: tuple[ChainPosting, ...]


def canonical_timestamp(moment: datetime) -> str:
    """UTC, always with microseconds: PostgreSQL's timestamptz keeps exactly microseconds, so the
    value read back from the database gives the same text as the one hashed before the insert."""
    if moment.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sorted_postings(postings: Iterable[ChainPosting]) -> tuple[ChainPosting, ...]:
    return tuple(sorted(postings, key=lambda p: (p.account_id, p.currency, p.amount)))


def canonical_content(entry: ChainEntry) -> bytes:
    document = {
        "v": CHAIN_VERSION,
        "sequence": entry.sequence,
        "key": entry.idempotency_key,
        "memo": entry.memo,
        "reference_type": entry.reference_type,
        "reference_id": entry.reference_id,
        "reverses": entry.reverses_id,
        "created_at": canonical_timestamp(entry.created_at),
        "postings": [[p.account_id, p.currency, p.amount] for p in sorted_postings(entry.postings)],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def entry_hash(prev_hash: str, entry: ChainEntry) -> str:
    """Hex SHA-256 of the previous entry's hash and this entry's canonical content."""
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(canonical_content(entry))
    return digest.hexdigest()
