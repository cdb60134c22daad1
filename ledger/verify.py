"""Checking the books from scratch: what `manage.py verify_ledger` runs.

The triggers of migration 0002 refuse bad writes, but a superuser can switch them off
(`ALTER TABLE ... DISABLE TRIGGER`, `session_replication_role = replica`) or edit the files under
PostgreSQL. This re-derives everything from the stored rows, in one consistent snapshot:
per-entry balance and leg count, posting currency against its account, reversals that mirror
their original, the trial balance per currency, and the audit chain (sequence without gaps,
each prev_hash the previous hash, each hash recomputed by `ledger.chain`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from ledger.chain import GENESIS_HASH, ChainPosting, EntryContent, canonical_content, entry_hash

# Entries read per query while walking the chain (memory stays flat however long the chain).
BATCH = 5000
# Problems kept for the report: the first one is what matters, a few more give context.
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Problem:
    sequence: int  # chain position of the bad entry (0 when no entry is involved)
    entry_id: int | None
    message: str

    def sort_key(self) -> tuple[bool, int]:
        # Rows first, in chain order; then what concerns the books as a whole (trial balance),
        # which a bad row usually explains.
        return (self.entry_id is None, self.sequence)

    def __str__(self) -> str:
        where = f"journal entry id={self.entry_id} sequence={self.sequence}"
        return f"{where}: {self.message}" if self.entry_id is not None else self.message


@dataclass
class Report:
    entries: int = 0
    postings: int = 0
    accounts: int = 0
    head_sequence: int = 0
    head_hash: str = GENESIS_HASH
    # Sum of all balances per currency, in minor units: must be 0 in each.
    totals: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        return min(self.problems, key=Problem.sort_key) if self.problems else None


# Entry-level rules, each as (query, message); every query returns (entry id, sequence, detail).
_ENTRY_CHECKS = [
    (
        """SELECT e.id, e.sequence, p.currency || ' sums to ' || sum(p.amount)
           FROM ledger_journalentry e JOIN ledger_posting p ON p.entry_id = e.id
           GROUP BY e.id, e.sequence, p.currency HAVING sum(p.amount) <> 0""",
        "does not balance: {} minor units",
    ),
    (
        """SELECT e.id, e.sequence, count(p.id)::text
           FROM ledger_journalentry e LEFT JOIN ledger_posting p ON p.entry_id = e.id
           GROUP BY e.id, e.sequence HAVING count(p.id) < 2""",
        "has {} posting(s), fewer than two",
    ),
    (
        """SELECT e.id, e.sequence, 'posting ' || p.id || ' in ' || p.currency
                  || ' on a ' || a.currency || ' account ' || a.id
           FROM ledger_journalentry e JOIN ledger_posting p ON p.entry_id = e.id
           JOIN ledger_account a ON a.id = p.account_id
           WHERE p.currency <> a.currency""",
        "{}",
    ),
    (
        """SELECT e.id, e.sequence, 'posting ' || p.id || ' is zero'
           FROM ledger_journalentry e JOIN ledger_posting p ON p.entry_id = e.id
           WHERE p.amount = 0""",
        "{}",
    ),
    (
        """SELECT r.id, r.sequence, 'entry ' || r.reverses_id || ', account ' || s.account_id
           FROM ledger_journalentry r
           JOIN LATERAL (
               SELECT account_id FROM (
                   SELECT account_id, amount FROM ledger_posting WHERE entry_id = r.id
                   UNION ALL
                   SELECT account_id, amount FROM ledger_posting WHERE entry_id = r.reverses_id
               ) legs GROUP BY account_id HAVING sum(amount) <> 0
           ) s ON true
           WHERE r.reverses_id IS NOT NULL""",
        "does not undo the entry it reverses: {}",
    ),
]

_CHAIN_BATCH = """
SELECT e.id, e.sequence, e.idempotency_key, e.memo, e.reference_type, e.reference_id,
       e.reverses_id, e.created_at, e.prev_hash, e.hash,
       (SELECT coalesce(json_agg(json_build_array(p.account_id, p.currency, p.amount)), '[]')
        FROM ledger_posting p WHERE p.entry_id = e.id)
FROM ledger_journalentry e
WHERE e.sequence > %s
ORDER BY e.sequence
LIMIT %s
"""


def verify_books() -> Report:
    """Recompute the books and the chain; the report lists every problem found (up to a cap)."""
    report = Report()
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if outermost:
            # One snapshot for every check, so that posters running meanwhile cannot make the
            # counts, the balances and the chain disagree; READ ONLY because this never writes.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor.execute(
            "SELECT (SELECT count(*) FROM ledger_journalentry),"
            " (SELECT count(*) FROM ledger_posting), (SELECT count(*) FROM ledger_account)"
        )
        report.entries, report.postings, report.accounts = cursor.fetchone()
        cursor.execute(
            "SELECT currency, sum(amount) FROM ledger_posting GROUP BY currency ORDER BY currency"
        )
        report.totals = {currency: int(total) for currency, total in cursor.fetchall()}
        for currency, total in report.totals.items():
            if total != 0:
                report.problems.append(
                    Problem(0, None, f"trial balance: {currency} balances sum to {total}, not 0")
                )
        for query, message in _ENTRY_CHECKS:
            cursor.execute(query + " ORDER BY 2 LIMIT %s", [MAX_PROBLEMS])
            for entry_id, sequence, detail in cursor.fetchall():
                report.problems.append(Problem(sequence, entry_id, message.format(detail)))
        _walk_chain(cursor, report)
    report.problems.sort(key=Problem.sort_key)
    del report.problems[MAX_PROBLEMS:]
    return report


def _walk_chain(cursor: CursorWrapper, report: Report) -> None:
    expected_sequence = 1
    previous_hash = GENESIS_HASH
    chain_problems = 0
    while chain_problems < MAX_PROBLEMS:
        cursor.execute(_CHAIN_BATCH, [expected_sequence - 1, BATCH])
        rows = cursor.fetchall()
        if not rows:
            return
        for row in rows:
            (entry_id, sequence, key, memo, ref_type, ref_id, reverses_id, created_at) = row[:8]
            prev_hash, stored_hash, legs = row[8:]
            found: list[str] = []
            if sequence != expected_sequence:
                found.append(f"sequence {sequence} where {expected_sequence} was expected")
            if prev_hash != previous_hash:
                found.append(f"prev_hash {prev_hash} is not the previous hash {previous_hash}")
            content = EntryContent(
                idempotency_key=key,
                memo=memo,
                reference_type=ref_type,
                reference_id=ref_id,
                reverses_id=reverses_id,
                postings=tuple(
                    ChainPosting(account_id=a, currency=c, amount=m) for a, c, m in legs
                ),
            )
            recomputed = entry_hash(
                prev_hash=prev_hash,
                sequence=sequence,
                created_at=created_at,
                content=canonical_content(content),
            )
            if recomputed != stored_hash:
                found.append(
                    f"hash {stored_hash} does not match its content (recomputed {recomputed}):"
                    " the entry or its postings were changed after it was posted"
                )
            for message in found:
                report.problems.append(Problem(sequence, entry_id, message))
                chain_problems += 1
            # Go on from the stored hash, so that one altered entry is reported once, not as
            # every entry after it.
            expected_sequence = sequence + 1
            previous_hash = stored_hash
            report.head_sequence, report.head_hash = sequence, stored_hash
