"""Monthly partitions of `usage_record`: one per month of `occurred_at` (UTC).

Created ahead of time by the beat task `ensure_usage_partitions` (and by the migration for the
months around the day it runs), so the insert path normally does no DDL. A record for a month
without a partition (back-dated usage, down to TOLLGATE_EARLIEST_PERIOD) is still accepted: the
ingest service calls
`partitions_ensure` for the batch's months first, in its own short transaction, before it opens the
transaction that writes. There is deliberately no DEFAULT partition: rows in it would make the
later CREATE of that month's partition fail, and moving them would mean deleting from an
append-only table.

Each partition is created with extended statistics on the columns a month's aggregation groups by
that depend on each other (a model has one license, a license one licensor): without them the
planner multiplies their distinct counts, expects ~100x the groups there are, and sorts the month
to disk instead of hashing it (docs/performance.md, "Billing"). The parent `usage_record` has the
same object (migration 0005) for queries that go through it; PostgreSQL fills a partitioned
parent's statistics only on an explicit `ANALYZE usage_record` (autovacuum never analyzes a
parent), which is why the billing run reads its month's partition by name
(`month_relation`) and analyzes it first when its statistics are missing or stale
(`partition_analyze_if_stale`).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction
from django.utils import timezone

from core.periods import add_months, month_bounds
from core.tables import table_analyze_if_stale
from usage.wire import earliest_accepted

# pg_advisory_xact_lock(class, year * 100 + month): held while a month's partition is created.
PARTITION_LOCK_CLASS = 0x7570  # "up"
# How far ahead a partition may be created, in months after the current one (the beat task
# keeps 3 ahead; records are at most 5 minutes in the future).
AHEAD_MAX = 12

# Months known to exist in this process: a partition is never dropped, so the cache cannot go
# stale in the direction that matters (it may only miss a partition another process created).
_known: set[tuple[int, int]] = set()


def partitions_forget() -> None:
    """Forget the months known to exist, so the next ingest looks again: for a test that drops a
    partition to replay a month's first batch."""
    _known.clear()


# The grouping columns that determine each other: model -> license -> licensor.
STATISTICS_COLUMNS = ("licensor_id", "license_id", "model_id")


def partition_name(year: int, month: int) -> str:
    return f"usage_record_p{year:04d}_{month:02d}"


def statistics_name(table: str) -> str:
    """The extended statistics object of `table` (a partition, or the parent)."""
    return f"{table}_model_stats"


def statistics_sql(table: str) -> str:
    """CREATE STATISTICS for `table`: distinct counts and functional dependencies of
    STATISTICS_COLUMNS, so a GROUP BY of them is estimated at its real number of groups."""
    columns = ", ".join(STATISTICS_COLUMNS)
    return (
        f"CREATE STATISTICS IF NOT EXISTS {statistics_name(table)} (ndistinct, dependencies)"
        f" ON {columns} FROM {table}"
    )


def month_relation(year: int, month: int) -> str:
    """What a query of one month reads: its partition when it exists (whose own statistics the
    planner then uses), else the parent (which holds no row of that month)."""
    name = partition_name(year, month)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        row = cursor.fetchone()
    return name if row and row[0] else "usage_record"


def partition_analyze_if_stale(year: int, month: int) -> bool:
    """ANALYZE the month's partition when it never was, or when more than a tenth of its rows
    changed since (`core.tables.table_analyze_if_stale`): the billing run's plan depends on it.
    Returns whether it analyzed."""
    return table_analyze_if_stale(partition_name(year, month))


def partitions_window() -> tuple[tuple[int, int], tuple[int, int]]:
    """The first and last (year, month) a partition may be created for: TOLLGATE_EARLIEST_PERIOD
    to AHEAD_MAX months after the current one. Bounds the partitions a host can cause to exist
    (docs/security.md, finding 2)."""
    first = earliest_accepted()
    today = timezone.now()
    return (first.year, first.month), add_months(today.year, today.month, AHEAD_MAX)


def partitions_ensure(months: Iterable[tuple[int, int]]) -> list[str]:
    """Create the partitions of `months` that do not exist yet; return the names created.
    A month outside `partitions_window()` is a ValueError, and then nothing is created.

    Runs in its own transaction (DDL takes an ACCESS EXCLUSIVE lock on the parent for a moment;
    holding it inside a long ingest transaction would stall every other writer)."""
    wanted = set(months) - _known
    if not wanted:
        return []
    first, last = partitions_window()
    outside = sorted(m for m in wanted if not first <= m <= last)
    if outside:
        shown = ", ".join(f"{y:04d}-{m:02d}" for y, m in outside)
        raise ValueError(
            f"no usage partition is created outside {first[0]:04d}-{first[1]:02d} to"
            f" {last[0]:04d}-{last[1]:02d}: {shown}"
        )
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
                    # Two requests may both find the month missing. CREATE ... IF NOT EXISTS
                    # does not make that safe: both pass the name check, and the second fails
                    # with "relation already exists" once the first commits (a 500 for the first
                    # batches of a month sent in parallel). So creators of a month queue on an
                    # advisory lock, and each looks again (a fresh snapshot of pg_class) once it
                    # holds it: only the first creates.
                    cursor.execute(
                        "SELECT pg_advisory_xact_lock(%s, %s)",
                        [PARTITION_LOCK_CLASS, year * 100 + month],
                    )
                    cursor.execute("SELECT 1 FROM pg_class WHERE relname = %s", [name])
                    if cursor.fetchone() is None:
                        cursor.execute(
                            f"CREATE TABLE {name} PARTITION OF usage_record"
                            f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                        )
                        cursor.execute(statistics_sql(name))
                        created.append(name)
            # Inside an outer transaction (a test's) the CREATE may still be rolled back.
            if not connection.in_atomic_block:
                _known.add((year, month))
    return created
