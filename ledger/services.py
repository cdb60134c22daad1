"""Writes to the books: accounts, journal entries, reversals, and the money flow of billing.

Every amount is a signed int of the currency's minor unit (cents for USD): debit > 0, credit < 0.

Transactions: these services open a transaction when called outside one (`transaction.atomic`),
never `durable=True`, because billing calls them inside its own transaction (a settlement and its
accrual commit together); journal_post adds no savepoint when nested (see _post_batch). Posting
takes the chain lock (`ledger_chain_head`, migration 0002), which is held until the *caller's*
transaction ends, so:
- post ledger entries last in a transaction, after every other lock is taken (a fixed order:
  the chain lock last), and keep that transaction short: every other poster waits for it;
- resolve accounts (`account_for`) before the first post;
- run at READ COMMITTED (Django's default): the chain head must be read with a fresh snapshot
  after the lock is granted. Under REPEATABLE READ a stale head is refused by the chain-link
  trigger rather than forking the chain.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction

from ledger.chain import ChainPosting, EntryContent, canonical_content, sorted_postings
from ledger.models import Account, AccountKind, JournalEntry, Posting
from licensing.models import Host, Licensor

# PostgreSQL's bigint, the column type of Posting.amount.
_MAX_AMOUNT = 2**63 - 1


class LedgerError(Exception):
    """A journal entry was refused before it reached the database."""


class UnbalancedEntry(LedgerError, ValueError):
    """Postings that do not make a valid entry: fewer than two, a zero, or a non-zero sum."""


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used by an entry with other content."""


class AlreadyReversed(LedgerError):
    """The entry already has a reversal (refused by the unique constraint on `reverses`)."""


@dataclass(frozen=True)
class PostingSpec:
    account: Account
    amount_minor: int  # signed integer minor units of the account's currency: debit > 0


@dataclass(frozen=True)
class EntrySpec:
    """One entry of journal_post_many: the arguments of journal_post."""

    idempotency_key: str
    memo: str
    postings: Sequence[PostingSpec]
    reference_type: str
    reference_id: str = ""


@dataclass(frozen=True)
class _Content:
    """What an idempotency key stands for: two posts with the same key must agree on all of it."""

    memo: str
    reference_type: str
    reference_id: str
    reverses_id: int | None
    postings: tuple[ChainPosting, ...]  # sorted


def account_for(*, owner: Licensor | Host | None, kind: str, currency: str) -> Account:
    """The account of `owner` (None: the platform) of this kind and currency, opened on first use.

    Safe under concurrency: the unique constraint on (owner, kind, currency) makes a racing
    second insert fail, and get_or_create then reads the winner's row (in a savepoint, so the
    caller's transaction survives).
    """
    licensor = owner if isinstance(owner, Licensor) else None
    host = owner if isinstance(owner, Host) else None
    if owner is not None and licensor is None and host is None:
        raise TypeError(f"an account owner is a Licensor, a Host or None, not {owner!r}")
    account, _ = Account.objects.get_or_create(
        licensor=licensor, host=host, kind=kind, currency=currency
    )
    return account


def journal_post(
    *,
    idempotency_key: str,
    memo: str,
    postings: Sequence[PostingSpec],
    reference_type: str,
    reference_id: str = "",
) -> JournalEntry:
    """Post one balanced entry, or return the entry already posted under `idempotency_key`.

    The same key with the same memo, reference and postings returns the existing entry; the same
    key with anything else raises IdempotencyConflict. Concurrent calls with one key make one
    entry: the unique constraint on the key decides (INSERT ... ON CONFLICT DO NOTHING).
    journal_post_many of one entry: one round trip, and no savepoint when nested.
    """
    (entry,) = journal_post_many(
        entries=[
            EntrySpec(
                idempotency_key=idempotency_key,
                memo=memo,
                postings=postings,
                reference_type=reference_type,
                reference_id=reference_id,
            )
        ]
    )
    return entry


def journal_post_many(*, entries: Sequence[EntrySpec]) -> list[JournalEntry]:
    """Post several balanced entries in one round trip, in order, contiguous on the chain (no
    other poster's entry between them); return them in the order given.

    Each entry behaves as journal_post: a key already posted with the same content returns the
    existing entry, with other content raises IdempotencyConflict, and then nothing of the batch
    is written. Every entry is validated before anything is written (UnbalancedEntry,
    ValueError); a key may appear once per batch. The chain lock is taken once for the batch, so
    a bulk caller (a payout run, a bulk approval) pays the lock and the commit once per batch.
    """
    batch = [
        (
            spec.idempotency_key,
            _content(
                memo=spec.memo,
                postings=spec.postings,
                reference_type=spec.reference_type,
                reference_id=spec.reference_id,
                reverses_id=None,
            ),
        )
        for spec in entries
    ]
    return _post_batch(batch)


@transaction.atomic
def journal_reverse(
    *, entry: JournalEntry, reason: str, idempotency_key: str | None = None
) -> JournalEntry:
    """Post the mirror image of `entry`. An entry is reversed once only: a second reversal, even
    a concurrent one, raises AlreadyReversed (the unique constraint on `reverses` decides).

    The default key is derived from the entry and the reason, so a retry with the same reason
    returns the reversal it already made.
    """
    if entry.pk is None:
        raise ValueError("only a posted entry can be reversed")
    if not reason.strip():
        raise ValueError("a reversal needs a reason")
    if idempotency_key is None:
        reason_digest = hashlib.sha256(reason.encode("utf-8")).hexdigest()[:16]
        idempotency_key = f"reversal:{entry.pk}:{reason_digest}"
    legs = list(entry.postings.all())
    content = _Content(
        memo=f"Reversal of entry #{entry.sequence} ({entry.idempotency_key}): {reason}",
        reference_type="reversal",
        reference_id=str(entry.pk),
        reverses_id=entry.pk,
        postings=sorted_postings(
            ChainPosting(account_id=p.account_id, currency=p.currency, amount=-p.amount)
            for p in legs
        ),
    )
    existing = JournalEntry.objects.filter(reverses_id=entry.pk).first()
    if existing is not None and existing.idempotency_key != idempotency_key:
        raise AlreadyReversed(
            f"journal entry #{entry.sequence} was already reversed by entry #{existing.sequence}"
        )
    try:
        # A savepoint, so that AlreadyReversed leaves the caller's transaction usable.
        with transaction.atomic():
            return _post(idempotency_key=idempotency_key, content=content)
    except IntegrityError as exc:
        if _constraint_name(exc) == "ledger_journalentry_reverses_id_key":
            raise AlreadyReversed(
                f"journal entry #{entry.sequence} was already reversed by another transaction"
            ) from exc
        raise


# --- The money flow (chart of accounts: docs/ledger.md) ------------------------------------


@transaction.atomic
def settlement_accrual_post(
    *,
    settlement_id: str,
    host: Host,
    licensor: Licensor,
    currency: str,
    amount_minor: int,
    platform_fee_minor: int = 0,
    memo: str = "",
) -> JournalEntry:
    """A settlement is approved: the host owes `amount_minor`; the licensor is owed that less the
    platform fee, which is platform revenue. Debit host receivable; credit licensor payable and
    platform revenue. Idempotent per settlement (key `settlement:<id>:accrual`)."""
    return journal_post(
        idempotency_key=f"settlement:{settlement_id}:accrual",
        memo=memo or f"Settlement {settlement_id} approved",
        postings=_settlement_legs(host, licensor, currency, amount_minor, platform_fee_minor, +1),
        reference_type="settlement",
        reference_id=str(settlement_id),
    )


@transaction.atomic
def settlement_credit_post(
    *,
    settlement_id: str,
    host: Host,
    licensor: Licensor,
    currency: str,
    amount_minor: int,
    platform_fee_minor: int = 0,
    memo: str = "",
) -> JournalEntry:
    """A settlement with a negative total is approved (corrections of settled months took more
    back than the month added): the mirror of an accrual. Credit the host's receivable by
    `amount_minor` (positive); debit the licensor's payable by its share and platform revenue by
    the fee given back. Idempotent per settlement (key `settlement:<id>:credit`)."""
    return journal_post(
        idempotency_key=f"settlement:{settlement_id}:credit",
        memo=memo or f"Settlement {settlement_id} approved (credit)",
        postings=_settlement_legs(host, licensor, currency, amount_minor, platform_fee_minor, -1),
        reference_type="settlement",
        reference_id=str(settlement_id),
    )


def _settlement_legs(
    host: Host, licensor: Licensor, currency: str, amount_minor: int, fee_minor: int, sign: int
) -> list[PostingSpec]:
    """The legs of an accrual (sign +1: debit the host's receivable, credit the licensor's
    payable and the platform's fee) or of its mirror, a credit (sign -1)."""
    _require_positive(amount_minor, "amount_minor")
    if isinstance(fee_minor, bool) or not isinstance(fee_minor, int):
        raise TypeError("platform_fee_minor must be an int of minor units")
    if not 0 <= fee_minor <= amount_minor:
        raise ValueError("platform_fee_minor must be between 0 and amount_minor")
    receivable = account_for(owner=host, kind=AccountKind.RECEIVABLE, currency=currency)
    legs = [PostingSpec(account=receivable, amount_minor=sign * amount_minor)]
    licensor_share = amount_minor - fee_minor
    if licensor_share:
        payable = account_for(owner=licensor, kind=AccountKind.PAYABLE, currency=currency)
        legs.append(PostingSpec(account=payable, amount_minor=-sign * licensor_share))
    if fee_minor:
        revenue = account_for(owner=None, kind=AccountKind.PLATFORM_REVENUE, currency=currency)
        legs.append(PostingSpec(account=revenue, amount_minor=-sign * fee_minor))
    return legs


@transaction.atomic
def host_payment_post(
    *, payment_id: str, host: Host, currency: str, amount_minor: int, memo: str = ""
) -> JournalEntry:
    """The host paid: debit platform cash, credit the host's receivable. Idempotent per payment
    (key `payment:<id>`; pass the processor's id, e.g. a Stripe invoice or charge id)."""
    _require_positive(amount_minor, "amount_minor")
    cash = account_for(owner=None, kind=AccountKind.CASH, currency=currency)
    receivable = account_for(owner=host, kind=AccountKind.RECEIVABLE, currency=currency)
    return journal_post(
        idempotency_key=f"payment:{payment_id}",
        memo=memo or f"Payment {payment_id} received",
        postings=[
            PostingSpec(account=cash, amount_minor=amount_minor),
            PostingSpec(account=receivable, amount_minor=-amount_minor),
        ],
        reference_type="payment",
        reference_id=str(payment_id),
    )


@transaction.atomic
def licensor_payout_post(
    *, payout_id: str, licensor: Licensor, currency: str, amount_minor: int, memo: str = ""
) -> JournalEntry:
    """The licensor was paid out: debit its payable, credit platform cash. Idempotent per payout
    (key `payout:<id>`)."""
    _require_positive(amount_minor, "amount_minor")
    payable = account_for(owner=licensor, kind=AccountKind.PAYABLE, currency=currency)
    cash = account_for(owner=None, kind=AccountKind.CASH, currency=currency)
    return journal_post(
        idempotency_key=f"payout:{payout_id}",
        memo=memo or f"Payout {payout_id} sent",
        postings=[
            PostingSpec(account=payable, amount_minor=amount_minor),
            PostingSpec(account=cash, amount_minor=-amount_minor),
        ],
        reference_type="payout",
        reference_id=str(payout_id),
    )


# --- Internals --------------------------------------------------------------------------------


def _require_positive(amount: int, name: str) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"{name} must be an int of minor units, not {type(amount).__name__}")
    if amount <= 0:
        raise ValueError(f"{name} must be positive, not {amount}")


def _content(
    *,
    memo: str,
    postings: Sequence[PostingSpec],
    reference_type: str,
    reference_id: str,
    reverses_id: int | None,
) -> _Content:
    """Check what PostgreSQL will check too, so that callers get a clear Python error first."""
    if not reference_type or len(reference_type) > 32:
        raise ValueError("reference_type must be 1 to 32 characters")
    if len(reference_id) > 200:
        raise ValueError("reference_id must be at most 200 characters")
    if len(postings) < 2:
        raise UnbalancedEntry(f"an entry needs at least two postings, not {len(postings)}")
    legs = []
    totals: dict[str, int] = defaultdict(int)
    for spec in postings:
        amount = spec.amount_minor
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount_minor must be an int, not {type(amount).__name__}")
        if amount == 0:
            raise UnbalancedEntry("a posting of zero is refused")
        if abs(amount) > _MAX_AMOUNT:
            raise ValueError(f"amount_minor {amount} does not fit a bigint")
        if spec.account.pk is None:
            raise ValueError("post to saved accounts only (see account_for)")
        totals[spec.account.currency] += amount
        legs.append(
            ChainPosting(account_id=spec.account.pk, currency=spec.account.currency, amount=amount)
        )
    unbalanced = {currency: total for currency, total in totals.items() if total}
    if unbalanced:
        detail = ", ".join(f"{total:+d} {cur}" for cur, total in sorted(unbalanced.items()))
        raise UnbalancedEntry(f"postings must sum to zero in every currency; they sum to {detail}")
    return _Content(
        memo=memo,
        reference_type=reference_type,
        reference_id=reference_id,
        reverses_id=reverses_id,
        postings=sorted_postings(legs),
    )


def _post(*, idempotency_key: str, content: _Content) -> JournalEntry:
    """Post one entry (see _post_batch)."""
    (entry,) = _post_batch([(idempotency_key, content)])
    return entry


def _post_batch(batch: Sequence[tuple[str, _Content]]) -> list[JournalEntry]:
    """Insert the entries and their postings, or return those already under their keys.

    One round trip: ledger_post_entries (migration 0004; ledger_post_entry of 0003 for a single
    entry, which does the same with fewer statements) takes the chain lock once, which
    serializes posters until our transaction ends (the race it prevents: two posters reading the
    same previous hash and forking the chain), then for each entry reads the head, stamps
    created_at, hashes `ledger.chain`'s canonical content and inserts.
    """
    keys = [key for key, _ in batch]
    for key in keys:
        if not key or len(key) > 200:
            raise ValueError("idempotency_key must be 1 to 200 characters")
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"an idempotency key may appear once per batch: {', '.join(twice)}")
    if not batch:
        return []
    # No savepoint for one entry. Whatever fails in the database here (a bug: an account that
    # does not exist; a deadlock or a timeout, which a retry of the whole transaction handles)
    # leaves the caller's transaction unusable anyway; the errors a caller may catch and go on
    # after (ValueError, UnbalancedEntry above, IdempotencyConflict below) are raised outside
    # this block, and for one entry a conflict means nothing was written. A batch may have
    # written entries before its conflict is found: it gets a savepoint (two round trips for
    # the whole batch) so that the conflict undoes them and leaves the caller's transaction
    # usable, as for journal_post.
    with transaction.atomic(savepoint=len(batch) > 1):
        rows = _call_post_entries(batch)
        stored = _stored_entries([entry_id for entry_id, created, *_ in rows if not created])
        conflict = _first_conflict(batch, rows, stored)
        if conflict is not None and any(created for _, created, *_ in rows):
            raise conflict
    if conflict is not None:
        raise conflict
    # Built after the block: when it is the outermost, the chain lock is released at its commit,
    # and the other posters need not wait for these objects.
    return _entries(batch, rows, stored)


def _call_post_entries(batch: Sequence[tuple[str, _Content]]) -> list[tuple]:
    positions: list[int] = []
    accounts: list[int] = []
    amounts: list[int] = []
    currencies: list[str] = []
    contents: list[str] = []
    for position, (key, content) in enumerate(batch, start=1):
        contents.append(
            canonical_content(
                EntryContent(
                    idempotency_key=key,
                    memo=content.memo,
                    reference_type=content.reference_type,
                    reference_id=content.reference_id,
                    reverses_id=content.reverses_id,
                    postings=content.postings,
                )
            )
        )
        for posting in content.postings:
            positions.append(position)
            accounts.append(posting.account_id)
            amounts.append(posting.amount)
            currencies.append(posting.currency)
    with connection.cursor() as cursor:
        if len(batch) == 1:
            # One entry: ledger_post_entry (migration 0003) does the same with fewer statements
            # (~130 us less under the chain lock than ledger_post_entries for one entry).
            key, content = batch[0]
            cursor.execute(
                "SELECT entry_id, created, entry_sequence, entry_created_at, entry_prev_hash,"
                " entry_hash FROM ledger_post_entry(%s, %s, %s, %s, %s, %s,"
                " %s::bigint[], %s::bigint[], %s::varchar[])",
                [
                    key,
                    content.memo,
                    content.reference_type,
                    content.reference_id,
                    content.reverses_id,
                    contents[0],
                    _int_array(accounts),
                    _int_array(amounts),
                    _text_array(currencies),
                ],
            )
            return [cursor.fetchone()]
        # The arrays go as array literals built here: Django binds parameters client-side, and
        # psycopg then escapes every array element with a regular expression, which cost more
        # than all the rest of the Python side (~60 us per entry: a content is full of quotes).
        cursor.execute(
            "SELECT entry_id, created, entry_sequence, entry_created_at, entry_prev_hash,"
            " entry_hash FROM ledger_post_entries(%s::varchar[], %s::text[], %s::varchar[],"
            " %s::varchar[], %s::bigint[], %s::text[], %s::integer[], %s::bigint[],"
            " %s::bigint[], %s::varchar[])",
            [
                _text_array([key for key, _ in batch]),
                _text_array([content.memo for _, content in batch]),
                _text_array([content.reference_type for _, content in batch]),
                _text_array([content.reference_id for _, content in batch]),
                _int_array([content.reverses_id for _, content in batch]),
                _text_array(contents),
                _int_array(positions),
                _int_array(accounts),
                _int_array(amounts),
                _text_array(currencies),
            ],
        )
        return cursor.fetchall()


def _text_array(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of strings: each element quoted, backslash and double quote
    escaped (the only characters that need it inside quotes)."""
    return (
        "{"
        + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )


def _int_array(values: Sequence[int | None]) -> str:
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def _first_conflict(
    batch: Sequence[tuple[str, _Content]],
    rows: Sequence[tuple],
    stored: dict[int, tuple[JournalEntry, _Content]],
) -> IdempotencyConflict | None:
    """The first replay whose stored content differs from the batch's (a replay, or a
    concurrent poster of the same key that committed first)."""
    for (_, content), (entry_id, created, *_) in zip(batch, rows, strict=True):
        if not created:
            entry, stored_content = stored[entry_id]
            conflict = _conflict(entry, stored_content, content)
            if conflict is not None:
                return conflict
    return None


def _entries(
    batch: Sequence[tuple[str, _Content]],
    rows: Sequence[tuple],
    stored: dict[int, tuple[JournalEntry, _Content]],
) -> list[JournalEntry]:
    """The entries of the batch in its order: the stored ones for replays, the new ones built
    from what ledger_post_entries returned (no query)."""
    entries: list[JournalEntry] = []
    for (key, content), row in zip(batch, rows, strict=True):
        entry_id, created, sequence, created_at, prev_hash, digest = row
        if not created:
            entries.append(stored[entry_id][0])
            continue
        entry = JournalEntry(
            id=entry_id,
            sequence=sequence,
            idempotency_key=key,
            memo=content.memo,
            reference_type=content.reference_type,
            reference_id=content.reference_id,
            reverses_id=content.reverses_id,
            created_at=created_at,
            prev_hash=prev_hash,
            hash=digest,
        )
        entry._state.adding = False
        entry._state.db = connection.alias
        entries.append(entry)
    return entries


def _stored_entries(entry_ids: Sequence[int]) -> dict[int, tuple[JournalEntry, _Content]]:
    """The entries already posted, with their content as journal_post would have built it (two
    queries however many)."""
    if not entry_ids:
        return {}
    legs: dict[int, list[ChainPosting]] = defaultdict(list)
    for entry_id, account_id, currency, amount in Posting.objects.filter(
        entry_id__in=entry_ids
    ).values_list("entry_id", "account_id", "currency", "amount"):
        legs[entry_id].append(ChainPosting(account_id=account_id, currency=currency, amount=amount))
    return {
        entry.pk: (
            entry,
            _Content(
                memo=entry.memo,
                reference_type=entry.reference_type,
                reference_id=entry.reference_id,
                reverses_id=entry.reverses_id,
                postings=sorted_postings(legs[entry.pk]),
            ),
        )
        for entry in JournalEntry.objects.filter(pk__in=entry_ids)
    }


def _conflict(
    entry: JournalEntry, stored: _Content, content: _Content
) -> IdempotencyConflict | None:
    if stored == content:
        return None
    differences = [
        name
        for name in ("memo", "reference_type", "reference_id", "reverses_id", "postings")
        if getattr(stored, name) != getattr(content, name)
    ]
    return IdempotencyConflict(
        f"idempotency key {entry.idempotency_key!r} was already used by journal entry "
        f"#{entry.sequence} with a different {', '.join(differences)}; "
        "use a new key for a new entry, or journal_reverse to correct that one"
    )


def _constraint_name(exc: IntegrityError) -> str | None:
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)
