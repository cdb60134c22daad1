"""When usage of a month is late: the (host, licensor, month) closes that billing records, and the
locks that keep ingestion and closing in order (docs/billing.md, "Late usage of a pair without a
settlement").

A record is late when its (host, licensor, UTC month) is closed (`PeriodClose`: its settlement was
decided), or when its month's billing run completed (`PeriodComplete`) and the pair had no usage in
that run (no `PeriodOpen` row). One row per completed month stands for every pair without usage,
instead of one row per host and licensor.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from core.periods import period_bounds
from usage.models import PeriodComplete, PeriodOpen

# pg_advisory_xact_lock(class, host_id): ingest takes it shared, period_close exclusive.
PERIOD_LOCK_CLASS = 0x7573  # "us"
# pg_advisory_xact_lock(class, ALL_HOSTS) (no host has id 0): every batch takes it shared,
# period_complete exclusive, so no batch that saw a month not yet completed commits after it.
ALL_HOSTS = 0
# One statement, both locks, in this order (the whole service, then the host) everywhere.
INGEST_LOCKS_SQL = (
    f"SELECT pg_advisory_xact_lock_shared({PERIOD_LOCK_CLASS}, {ALL_HOSTS}),"
    f" pg_advisory_xact_lock_shared({PERIOD_LOCK_CLASS}, %(host)s)"
)

# Whether a batch whose earliest month is %(first)s can hold a late record at all: the host has
# closed some month, or some month from the batch's first on has completed its run. False for
# the common batch (this month's usage), which then skips `late_rule`.
ANY_CLOSED_SQL = """
SELECT EXISTS (SELECT 1 FROM usage_periodclose WHERE host_id = %(host)s)
    OR EXISTS (SELECT 1 FROM usage_periodcomplete WHERE period >= %(first)s)
"""
# What `late_rule` reads (both paths): the host's closed months, its open pairs and the completed
# months, from the batch's first month on.
CLOSED_SQL = """
SELECT 'closed', licensor_id, period FROM usage_periodclose WHERE host_id = %(host)s
UNION ALL
SELECT 'open', licensor_id, period FROM usage_periodopen
WHERE host_id = %(host)s AND period >= %(first)s
UNION ALL
SELECT 'complete', NULL, period FROM usage_periodcomplete WHERE period >= %(first)s
"""


def late_rule(cursor: Any, *, host_id: int, first: str) -> Callable[[int, str], bool]:
    """Whether a record of (licensor id, month) is late for this host: its month is closed
    (a decided settlement) or its month's run completed and the pair was not open then."""
    cursor.execute(CLOSED_SQL, {"host": host_id, "first": first})
    rows: dict[str, set[tuple[int | None, str]]] = {
        k: set() for k in ("closed", "open", "complete")
    }
    for kind, licensor_id, period in cursor.fetchall():
        rows[kind].add((licensor_id, period))
    closed, opened = rows["closed"], rows["open"]
    complete = {period for _, period in rows["complete"]}
    if not closed and not complete:
        return lambda licensor_id, period: False
    return lambda licensor_id, period: (
        (licensor_id, period) in closed
        or (period in complete and (licensor_id, period) not in opened)
    )


@transaction.atomic
def period_complete(
    *, period: str, open_pairs: set[tuple[int, int]], since: datetime | None
) -> bool:
    """Record that `period`'s billing run completed; idempotent (the first completion stands, and
    this returns False). `open_pairs`: the (host_id, licensor_id) pairs that had usage in the
    run; `since`: the run's aggregation cut-off. From the commit on, usage of the month of every
    other pair is accepted late (docs/billing.md, "Late usage of a pair without a settlement").

    Waits for every in-flight ingest batch (the lock they all hold shared), so no batch that saw
    the month open commits after it. After the commit, `period_stragglers` finds what such
    batches stored for pairs that were not in the run."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [PERIOD_LOCK_CLASS, ALL_HOSTS])
    if PeriodComplete.objects.filter(period=period).exists():
        return False
    # One statement for the run's pairs (tens of thousands): bulk_create compiled SQL for each.
    pairs = sorted(open_pairs)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO usage_periodopen (host_id, licensor_id, period)"
            " SELECT p.host_id, p.licensor_id, %s FROM unnest(%s::bigint[], %s::bigint[])"
            " AS p(host_id, licensor_id) ON CONFLICT DO NOTHING",
            [period, [h for h, _ in pairs], [lic for _, lic in pairs]],
        )
    PeriodComplete.objects.create(period=period, completed_at=timezone.now(), snapshot_at=since)
    return True


def period_stragglers(*, period: str) -> list[tuple[int, int]]:
    """The pairs not open in completed `period` with usage of the month that is not late: records
    received after the completing run's cut-off and committed before its completion, in no run.
    Read after `period_complete` committed, it needs no lock: every batch that read the month as
    open committed before the completion, and every later one marks such records late.

    One scan of the month's partition (there is no index on received_at), outside the ingest
    lock, so ingestion never waits for it."""
    complete = PeriodComplete.objects.get(period=period)
    open_pairs = set(PeriodOpen.objects.filter(period=period).values_list("host_id", "licensor_id"))
    start, end = period_bounds(period)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT host_id, licensor_id FROM usage_record WHERE occurred_at >= %s"
            " AND occurred_at < %s AND received_at > %s AND NOT late",
            [start, end, complete.snapshot_at or start],
        )
        found = {(int(h), int(lic)) for h, lic in cursor.fetchall()}
    return sorted(found - open_pairs)


def period_swept(*, period: str) -> None:
    """Note that `period_stragglers` of `period` were taken care of."""
    PeriodComplete.objects.filter(period=period, swept_at__isnull=True).update(
        swept_at=timezone.now()
    )


def periods_unswept() -> list[str]:
    """Completed months whose stragglers were not yet taken care of (a crash between the
    completion and its sweep)."""
    return list(
        PeriodComplete.objects.filter(swept_at__isnull=True)
        .order_by("period")
        .values_list("period", flat=True)
    )
