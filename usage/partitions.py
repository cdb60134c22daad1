"""Monthly partitions of `usage_record`: one per month of `occurred_at` (UTC).

Created ahead of time by the beat task `ensure_usage_partitions` (and by the migration for the
months around the day it runs), so the insert path normally does no DDL. A record for a month
without a partition (back-dated usage) is still accepted: the ingest service calls
`partitions_ensure` for the batch's months first, in its own short transaction, before it opens the
transaction that writes. There is deliberately no DEFAULT partition: rows in it would make the
later CREATE of that month's partition fail, and moving them would mean deleting from an
append-only table.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction

from core.periods import month_bounds

# Months known to exist in this process: a partition is never dropped, so the cache cannot go
# stale in the direction that matters (it may only miss a partition another process created).
_known: set[tuple[int, int]] = set()


def partition_name(year: int, month: int) -> str:
    return f"usage_record_p{year:04d}_{month:02d}"


def partitions_ensure(months: Iterable[tuple[int, int]]) -> list[str]:
    """Create the partitions of `months` that do not exist yet; return the names created.

    Runs in its own transaction (DDL takes an ACCESS EXCLUSIVE lock on the parent for a moment;
    holding it inside a long ingest transaction would stall every other writer)."""
    wanted = {m for m in months if 1 <= m[0] <= 9998} - _known
    if not wanted:
        return []
    created: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'usage_record'::regclass"
        )
        existing = {row[0] for row in cursor.fetchall()}
        for year, month in sorted(wanted):
            name = partition_name(year, month)
            if name not in existing:
                start, end = month_bounds(year, month)
                with transaction.atomic():
                    # IF NOT EXISTS: two processes may race to create the same month.
                    cursor.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF usage_record"
                        f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                    )
                created.append(name)
            # Inside an outer transaction (a test's) the CREATE may still be rolled back.
            if not connection.in_atomic_block:
                _known.add((year, month))
    return created

