"""The monthly billing run: start a run, settle each (licensor, host) pair, write its settlements.

The flow (docs/billing.md):

1. `billing_run_start` aggregates the month in PostgreSQL into `BillingRunGroup` rows and lists
   the (licensor, host) pairs to bill;
2. `billing_pairs_settle`, once per batch of pairs (a `bill_pairs` Celery task each, or a loop
   in `run_billing`), rates each pair's groups (billing/settling.py, billing/rerating.py),
   re-rates settled months that received usage since, and writes one draft settlement per
   currency, for the whole batch in one transaction; settled settlements are left as they are.
   `billing_pairs_bill` settles a batch that raises again pair by pair, recording failures;
3. the licensor approves or disputes (billing/review.py).

Every step is idempotent: a pair already done in a run is skipped, and a re-run recomputes drafts
from the same usage (docs/billing.md, "Batches").
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, F, Q, TextField, Value, When
from django.db.models.functions import Concat, Left
from django.utils import timezone

from billing import aggregation
from billing.bulk import ids_update, pairs_lookup, pairs_params, values_copy
from billing.models import (
    BillingRun,
    BillingRunGroup,
    BillingRunPair,
    PendingRerate,
    Settlement,
    SettlementStatus,
)
from billing.notifications import review_ready_record
from billing.settling import (
    Pair,
    PairOutcome,
    catalog_for_run,
    pairs_rate,
    settlements_write,
)
from billing.stale import billing_runs_reap, run_owner
from core.periods import period_bounds
from core.tables import table_analyze_if_stale
from usage.closing import period_complete, period_stragglers, period_swept, periods_unswept
from usage.partitions import partition_analyze_if_stale
from usage.selectors import period_open_pairs


def billing_run_start(*, period: str, trigger: str = "task") -> BillingRun:
    """Start a run of `period`: aggregate its usage into groups and list the pairs to bill.

    An earlier run of the period that is still running is superseded: its remaining pair tasks
    stop, and this run's tasks recompute the same drafts from newer usage."""
    start, _ = period_bounds(period)
    # The statistics the plans depend on, each ANALYZE committed on its own (autovacuum may be
    # off or late): inside the run's transaction it would hold its lock on the table, and keep
    # the new statistics from the other sessions, until the month's aggregation commits.
    # The month's aggregation reads the partition's; the batches find each pair's settlements by
    # the index of current settlements, and with no statistics (a table autovacuum never
    # analyzed) the planner may take (period, status) for it and read the whole period once per
    # pair (tests/billing/test_run_reads.py).
    partition_analyze_if_stale(start.year, start.month)
    table_analyze_if_stale(Settlement._meta.db_table)
    return _billing_run_start(period=period, trigger=trigger)


@transaction.atomic(durable=True)
def _billing_run_start(*, period: str, trigger: str) -> BillingRun:
    billing_runs_reap()  # a run whose process died is failed, not superseded (billing/stale.py)
    for completed in periods_unswept():  # a crash came between a completion and its sweep
        _period_sweep(completed)
    BillingRun.objects.filter(period=period, status=BillingRun.Status.RUNNING).update(
        status=BillingRun.Status.SUPERSEDED, finished_at=timezone.now()
    )
    # The aggregation's cut-off: usage received (by the ingest service's clock, the same as
    # this one) up to now. --verify re-rates a settlement from the records up to it.
    snapshot_at = timezone.now()
    run = BillingRun.objects.create(
        period=period,
        trigger=trigger,
        snapshot_at=snapshot_at,
        owner=run_owner(trigger),
        heartbeat_at=snapshot_at,
    )
    groups = aggregation.stage_groups(run_id=run.pk, period=period, received_until=snapshot_at)
    groups -= _drop_closed_pairs(run_id=run.pk, period=period)

    pairs: set[tuple[int, int]] = set(
        BillingRunGroup.objects.filter(run=run).values_list("host_id", "licensor_id").distinct()
    )
    # Settled months that received usage since: billed as adjustments in this period's
    # settlement, even when the pair has no usage of its own this month.
    pairs.update((h, lic) for h, lic, _ in aggregation.late_usage_periods(before_period=period))
    pairs.update(
        PendingRerate.objects.filter(period__lt=period).values_list("host_id", "licensor_id")
    )
    # Drafts whose usage vanished (it cannot, usage is append-only, but a catalog fix can move
    # it to another licensor) are recomputed, and so removed.
    # Disputed settlements of the period are re-rated too: a correction revises them.
    pairs.update(
        Settlement.objects.filter(
            period=period, status__in=[SettlementStatus.DRAFT, SettlementStatus.DISPUTED]
        ).values_list("host_id", "licensor_id")
    )
    # COPY of values: a run has up to tens of thousands of pairs (billing/bulk.py).
    values_copy(
        BillingRunPair,
        ("run_id", "host_id", "licensor_id", "error"),
        [(run.pk, h, lic, "") for h, lic in sorted(pairs)],
    )
    now = timezone.now()
    BillingRun.objects.filter(pk=run.pk).update(
        groups_count=groups,
        pairs_total=len(pairs),
        aggregated_at=now,
        **({"status": BillingRun.Status.DONE, "finished_at": now} if not pairs else {}),
    )
    run.refresh_from_db()
    _period_complete_if_finished(run)
    return run


# --- Months completed by their run (docs/billing.md, "Late usage of a pair without a settlement")


def _drop_closed_pairs(*, run_id: int, period: str) -> int:
    """A re-run of a month whose run completed bills only the pairs that had usage then: the
    others' usage of the month is billed as adjustments by later runs, never by a settlement of
    the month. Deletes their groups from this run; returns how many."""
    open_pairs = period_open_pairs(period=period)
    if open_pairs is None:
        return 0
    staged = BillingRunGroup.objects.filter(run_id=run_id)
    closed = set(staged.values_list("host_id", "licensor_id").distinct()) - open_pairs
    dropped = 0
    for host_id, licensor_id in sorted(closed):
        dropped += staged.filter(host_id=host_id, licensor_id=licensor_id).delete()[0]
    return dropped


def _period_complete_if_finished(run: BillingRun) -> None:
    """When `run` has just ended `done` or `partial`, its month is complete: every pair without
    usage in it is settled for the month (usage.closing.period_complete). Its usage that came in
    after the snapshot without being late is re-rated by the next run (`_period_sweep`)."""
    if run.status not in (BillingRun.Status.DONE, BillingRun.Status.PARTIAL):
        return
    open_pairs = set(
        BillingRunGroup.objects.filter(run_id=run.pk)
        .values_list("host_id", "licensor_id")
        .distinct()
    )
    if period_complete(period=run.period, open_pairs=open_pairs, since=run.snapshot_at):
        # After the commit: the sweep needs no lock then, so ingestion never waits for its scan.
        transaction.on_commit(lambda: _period_sweep(run.period))


@transaction.atomic
def _period_sweep(period: str) -> None:
    """Usage of completed `period` in no run and not late (committed between the completing run's
    cut-off and its completion) is re-rated by the next run, like a decided month's."""
    PendingRerate.objects.bulk_create(
        [
            PendingRerate(host_id=h, licensor_id=lic, period=period)
            for h, lic in period_stragglers(period=period)
        ],
        ignore_conflicts=True,
    )
    period_swept(period=period)


# --- end of months completed by their run


def _last_pairs(count: int) -> Q:
    """The run is still running and the `count` pairs being counted are its last ones."""
    return Q(status=BillingRun.Status.RUNNING) & Q(pairs_done__gte=F("pairs_total") - count)


def pairs_batches(run_id: int, pairs: Sequence[Pair]) -> list[list[Pair]]:
    """`pairs` of the run, in their order, cut into the batches that settle them (one
    transaction and one `bill_pairs` task each): at most BILLING_PAIRS_PER_BATCH pairs, and
    past a batch's first pair at most BILLING_GROUPS_PER_BATCH of the run's groups. A batch
    holds its groups' rows in memory (~2.5 KB each): counted in pairs alone, the bench's 250
    pairs of 160 groups each were one batch of 40,000 groups (~100 MB). A pair with more groups
    than the limit is a batch of its own (docs/billing.md, "Batches")."""
    counted = (
        BillingRunGroup.objects.filter(run_id=run_id)
        .values("host_id", "licensor_id")
        .annotate(n=Count("*"))
        .values_list("host_id", "licensor_id", "n")
    )
    counts = {(h, lic): n for h, lic, n in counted}
    most_pairs = settings.BILLING_PAIRS_PER_BATCH
    most_groups = settings.BILLING_GROUPS_PER_BATCH
    batches: list[list[Pair]] = []
    batch: list[Pair] = []
    groups = 0
    for pair in pairs:
        n = counts.get(pair, 0)
        if batch and (len(batch) == most_pairs or groups + n > most_groups):
            batches.append(batch)
            batch, groups = [], 0
        batch.append(pair)
        groups += n
    if batch:
        batches.append(batch)
    return batches


def _pair_locks(keys: list[str]) -> None:
    """Serialize all work on each pair's month: two runs of a period, or a batch delivered
    twice, must not write the same settlements concurrently (the loser would hit the unique
    key, or worse, interleave its line inserts with the winner's). Taken in sorted order, so
    two batches sharing pairs never deadlock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(%s::text[]) AS k",
            [sorted(keys)],
        )
        cursor.fetchall()


@transaction.atomic(durable=True)
def billing_pairs_settle(*, run_id: int, pairs: list[Pair]) -> dict[Pair, PairOutcome]:
    """Write the settlements of a batch of (licensor, host) pairs for the run's period, in one
    transaction: each pair's settlements, lines and history, its row marked done, the run's
    progress. Idempotent: a pair already done in this run is skipped, and a run superseded by a
    newer one changes nothing. Anything raised rolls the whole batch back (`billing_pairs_bill`
    then settles its pairs one by one)."""
    # The commit is durable (synchronous_commit as the server has it, on): a settlement that
    # run_billing prints or anything announces survives a database crash (docs/billing.md,
    # "Durability"); one flush per batch.
    # FOR UPDATE, in (host, licensor) order (`pairs_params`): a duplicate delivery of this batch
    # (or of one of its pairs) waits here, then sees done_at and skips them.
    # Values, not models: a run locks tens of thousands of pair rows.
    with connection.cursor() as cursor:
        cursor.execute(
            pairs_lookup(
                BillingRunPair,
                ("id", "host_id", "licensor_id", "done_at"),
                "t.run_id = %s",
                lock=True,
            ),
            [*pairs_params(pairs), run_id],
        )
        rows = cursor.fetchall()
    missing = set(pairs) - {(host_id, licensor_id) for _, host_id, licensor_id, _ in rows}
    if missing:
        raise BillingRunPair.DoesNotExist(f"run {run_id} has no pair (host, licensor) {missing}")
    outcomes = {pair: PairOutcome(skipped=True) for pair in pairs}
    # Read after the pairs' locks: a run superseded meanwhile changes nothing.
    run = BillingRun.objects.get(pk=run_id)
    if run.status != BillingRun.Status.RUNNING:
        return outcomes
    todo = [
        (pk, host_id, licensor_id) for pk, host_id, licensor_id, done_at in rows if done_at is None
    ]
    if not todo:
        return outcomes
    todo_pairs = [(host_id, licensor_id) for _, host_id, licensor_id in todo]
    _pair_locks([f"billing:{h}:{lic}:{run.period}" for h, lic in todo_pairs])
    catalog = catalog_for_run(run_id)
    rated = pairs_rate(run=run, pairs=todo_pairs, catalog=catalog)
    written = settlements_write(run=run, rated=rated, catalog=catalog)
    outcomes.update(written)

    now = timezone.now()
    ids_update(BillingRunPair, [pk for pk, _, _ in todo], done_at=now)
    # One statement: progress, and `done` for the batch that completes the run.
    last = _last_pairs(len(todo))
    BillingRun.objects.filter(pk=run_id).update(
        pairs_done=F("pairs_done") + len(todo),
        settlements_written=F("settlements_written")
        + sum(len(o.written) for o in written.values()),
        settlements_settled=F("settlements_settled")
        + sum(len(o.settled) for o in written.values()),
        heartbeat_at=now,
        status=Case(
            When(last & Q(pairs_failed=0), then=Value(BillingRun.Status.DONE)),
            When(last, then=Value(BillingRun.Status.PARTIAL)),
            default=F("status"),
        ),
        finished_at=Case(When(last, then=Value(now)), default=F("finished_at")),
    )
    finished = BillingRun.objects.get(pk=run_id)
    _period_complete_if_finished(finished)
    # The reviewers hear of the run's drafts once it has ended, after this commit.
    review_ready_record(run=finished)
    return outcomes


def billing_pair_settle(*, run_id: int, host_id: int, licensor_id: int) -> PairOutcome:
    """Write the settlements of one (licensor, host) pair: a batch of one."""
    return billing_pairs_settle(run_id=run_id, pairs=[(host_id, licensor_id)])[
        (host_id, licensor_id)
    ]


def billing_pairs_bill(
    *, run_id: int, pairs: list[Pair], transient: tuple[type[Exception], ...] = ()
) -> int:
    """Settle `pairs` as one batch; when the batch raises, settle them again one by one, and
    record each pair that still raises as failed (`billing_pair_fail`): one pair that cannot be
    settled never costs the others their settlements. Exceptions of the `transient` types
    propagate instead (the caller runs the batch again: what committed is skipped). Returns how
    many pairs failed."""
    try:
        billing_pairs_settle(run_id=run_id, pairs=pairs)
        return 0
    except transient:
        raise
    except Exception as exc:
        if len(pairs) == 1:
            host_id, licensor_id = pairs[0]
            failed = billing_pair_fail(
                run_id=run_id,
                host_id=host_id,
                licensor_id=licensor_id,
                error=pair_failure_text(exc),
            )
            return int(failed)
    failures = 0
    for host_id, licensor_id in pairs:
        try:
            billing_pairs_settle(run_id=run_id, pairs=[(host_id, licensor_id)])
        except transient:
            raise
        except Exception as exc:
            # The pair rolled back whole; the others are still billed.
            failures += billing_pair_fail(
                run_id=run_id,
                host_id=host_id,
                licensor_id=licensor_id,
                error=pair_failure_text(exc),
            )
    return failures


# How much of one pair's error the run's summary keeps (characters); the pair keeps it all.
_RUN_ERROR_PER_PAIR = 1_000
_RUN_ERROR_MAX = 100_000


def pair_failure_text(exc: BaseException) -> str:
    """What an operator reads about a pair that failed: the exception's type and message."""
    return f"{type(exc).__name__}: {exc}".strip()


@transaction.atomic(durable=True)
def billing_pair_fail(*, run_id: int, host_id: int, licensor_id: int, error: str) -> bool:
    """Record that one pair of the run could not be settled, after `billing_pair_settle` raised
    and rolled back whole: the pair is done with its `error`, the run counts it and names it in
    its own `error`, and the run's last pair ends it `partial` (or `failed` when no pair was
    settled). The other pairs are unaffected. Returns False when the pair was already done (a
    duplicate delivery settled or failed it first)."""
    # FOR UPDATE: the same lock billing_pair_settle takes, so a pair is counted once.
    pair = (
        BillingRunPair.objects.select_for_update(of=("self",))
        .select_related("host", "licensor")
        .get(run_id=run_id, host_id=host_id, licensor_id=licensor_id)
    )
    if pair.done_at is not None:
        return False
    now = timezone.now()
    BillingRunPair.objects.filter(pk=pair.pk).update(done_at=now, error=error)
    summary = f"licensor {pair.licensor.slug} / host {pair.host.slug}: "
    summary += error[:_RUN_ERROR_PER_PAIR] + "\n"
    last = _last_pairs(1)
    BillingRun.objects.filter(pk=run_id).update(
        pairs_done=F("pairs_done") + 1,
        pairs_failed=F("pairs_failed") + 1,
        heartbeat_at=now,
        error=Left(Concat(F("error"), Value(summary), output_field=TextField()), _RUN_ERROR_MAX),
        status=Case(
            When(
                last & Q(pairs_failed__gte=F("pairs_total") - 1),
                then=Value(BillingRun.Status.FAILED),
            ),
            When(last, then=Value(BillingRun.Status.PARTIAL)),
            default=F("status"),
        ),
        finished_at=Case(When(last, then=Value(now)), default=F("finished_at")),
    )
    finished = BillingRun.objects.get(pk=run_id)
    _period_complete_if_finished(finished)
    # The reviewers hear of the run's drafts once it has ended, after this commit.
    review_ready_record(run=finished)
    return True


__all__ = [
    "PairOutcome",
    "billing_pair_fail",
    "billing_pair_settle",
    "billing_pairs_bill",
    "billing_pairs_settle",
    "billing_run_start",
    "pair_failure_text",
    "pairs_batches",
]
