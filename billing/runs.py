"""The monthly billing run: start a run, settle each (licensor, host) pair, write its settlements.

The flow (docs/billing.md):

1. `billing_run_start` aggregates the month in PostgreSQL into `BillingRunGroup` rows and lists
   the (licensor, host) pairs to bill;
2. `billing_pair_settle`, once per pair (a Celery task each, or a loop in `run_billing`), rates
   the pair's groups (billing/rerating.py), re-rates settled months that received usage since,
   and writes one draft settlement per currency; settled settlements are left as they are;
3. the licensor approves or disputes (billing/review.py).

Every step is idempotent: a pair already done in a run is skipped, and a re-run recomputes drafts
from the same usage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Case, F, Q, TextField, Value, When
from django.db.models.functions import Concat, Left
from django.utils import timezone

from billing import aggregation
from billing.events import settlement_event
from billing.history import SYSTEM, settlement_event_record
from billing.models import (
    NOT_CURRENT_STATUSES,
    SETTLED_STATUSES,
    BillingRun,
    BillingRunGroup,
    BillingRunPair,
    PendingRerate,
    Settlement,
    SettlementLine,
    SettlementStatus,
)
from billing.notifications import review_ready_record
from billing.rerating import (
    Bundle,
    CatalogSnapshot,
    line_to_row,
    pair_period_rate,
    settled_month_rerate,
)
from billing.revisions import review_due_at, revision_needed, settlement_revise
from billing.stale import billing_runs_reap, run_owner
from core.money import quantize
from core.periods import period_bounds
from core.vocabulary import LINE_KINDS
from licensing.models import Agreement, LicenseVersion
from licensing.rating import Line
from usage.closing import period_complete, period_stragglers, period_swept, periods_unswept
from usage.selectors import period_open_pairs, periods_closed_by_completion


@transaction.atomic(durable=True)
def billing_run_start(*, period: str, trigger: str = "task") -> BillingRun:
    """Start a run of `period`: aggregate its usage into groups and list the pairs to bill.

    An earlier run of the period that is still running is superseded: its remaining pair tasks
    stop, and this run's tasks recompute the same drafts from newer usage."""
    period_bounds(period)
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
    BillingRunPair.objects.bulk_create(
        [BillingRunPair(run=run, host_id=h, licensor_id=lic) for h, lic in sorted(pairs)]
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


def _last_pair() -> Q:
    """The run is still running and the pair being counted is its last one."""
    return Q(status=BillingRun.Status.RUNNING) & Q(pairs_done__gte=F("pairs_total") - 1)


@dataclass
class PairOutcome:
    """What one pair task did: the settlements it wrote and those it found already settled."""

    written: list[Settlement] = field(default_factory=list)
    settled: list[Settlement] = field(default_factory=list)
    skipped: bool = False  # already done in this run, or the run was superseded


_catalogs: dict[int, CatalogSnapshot] = {}


def _catalog_for_run(run_id: int) -> CatalogSnapshot:
    if run_id not in _catalogs:
        _catalogs.clear()  # one run at a time per process is the common case; keep memory flat
        _catalogs[run_id] = CatalogSnapshot.load()
    return _catalogs[run_id]


def _settled_periods_to_rerate(
    *, host_id: int, licensor_id: int, period: str, catalog: CatalogSnapshot
) -> list[str]:
    periods = catalog.periods_to_rerate(host_id=host_id, licensor_id=licensor_id, period=period)
    if not periods:
        return []
    settled = Settlement.objects.filter(
        host_id=host_id,
        licensor_id=licensor_id,
        period__in=periods,
        status__in=SETTLED_STATUSES,
    ).values_list("period", flat=True)
    # Months the pair had no usage in when their run completed are settled without a settlement.
    closed = periods_closed_by_completion(
        host_id=host_id, licensor_id=licensor_id, periods=set(periods) - set(settled)
    )
    return sorted(set(settled) | closed)


def _adjustments(
    *,
    host_id: int,
    licensor_id: int,
    period: str,
    snapshot_at: datetime | None,
    bundles: dict[str, Bundle],
    catalog: CatalogSnapshot,
) -> None:
    """Add to `bundles` the adjustment lines of every settled month that received usage since:
    re-rated with all its usage, minus everything already billed for it (its settlement and the
    adjustments of other settlements; never the drafts of `period` being recomputed)."""
    for settled_period in _settled_periods_to_rerate(
        host_id=host_id, licensor_id=licensor_id, period=period, catalog=catalog
    ):
        adjustments = settled_month_rerate(
            host_id=host_id,
            licensor_id=licensor_id,
            period=settled_period,
            received_until=snapshot_at,
            # The period's draft, or its disputed settlement that a revision may replace.
            not_billed=Q(
                settlement__period=period,
                settlement__status__in=[SettlementStatus.DRAFT, SettlementStatus.DISPUTED],
            ),
            catalog=catalog,
        )
        for currency, lines in adjustments.items():
            bundle = bundles.setdefault(currency, Bundle())
            # The settlement's digests stay those of its own month's usage and terms: the
            # adjustment lines are differences against other settlements, not a rating.
            bundle.lines += [(license_id, line, []) for license_id, line in lines]


def _pair_lock(host_id: int, licensor_id: int, period: str) -> None:
    """Serialize all work on one pair's month: two runs of a period, or a task delivered twice,
    must not write the same settlements concurrently (the loser would hit the unique key, or
    worse, interleave its line inserts with the winner's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            [f"billing:{host_id}:{licensor_id}:{period}"],
        )


@transaction.atomic(durable=True)
def billing_pair_settle(*, run_id: int, host_id: int, licensor_id: int) -> PairOutcome:
    """Write the settlements of one (licensor, host) pair for the run's period. Idempotent: a
    pair already done in this run, or a run superseded by a newer one, changes nothing."""
    # The commit is durable (synchronous_commit as the server has it, on): a settlement that
    # run_billing prints or anything announces survives a database crash (docs/billing.md,
    # "Durability").
    # FOR UPDATE: a duplicate delivery of this task waits here, then sees done_at and stops.
    pair = (
        BillingRunPair.objects.select_for_update(of=("self",))
        .select_related("run")
        .get(run_id=run_id, host_id=host_id, licensor_id=licensor_id)
    )
    run = pair.run
    if pair.done_at is not None or run.status != BillingRun.Status.RUNNING:
        return PairOutcome(skipped=True)
    _pair_lock(host_id, licensor_id, run.period)

    period = run.period
    catalog = _catalog_for_run(run_id)
    rows = list(
        BillingRunGroup.objects.filter(run_id=run_id, host_id=host_id, licensor_id=licensor_id)
        .order_by("id")
        .values(*aggregation.COLUMNS)
    )
    bundles = pair_period_rate(period, rows, catalog)
    _adjustments(
        host_id=host_id,
        licensor_id=licensor_id,
        period=period,
        snapshot_at=run.snapshot_at,
        bundles=bundles,
        catalog=catalog,
    )
    outcome = _write_settlements(
        run=run, host_id=host_id, licensor_id=licensor_id, bundles=bundles, catalog=catalog
    )

    now = timezone.now()
    BillingRunPair.objects.filter(pk=pair.pk).update(done_at=now)
    # One statement: progress, and `done` for the pair that completes the run.
    last = _last_pair()
    BillingRun.objects.filter(pk=run_id).update(
        pairs_done=F("pairs_done") + 1,
        settlements_written=F("settlements_written") + len(outcome.written),
        settlements_settled=F("settlements_settled") + len(outcome.settled),
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
    return outcome


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
    last = _last_pair()
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


def _write_settlements(
    *,
    run: BillingRun,
    host_id: int,
    licensor_id: int,
    bundles: dict[str, Bundle],
    catalog: CatalogSnapshot,
) -> PairOutcome:
    outcome = PairOutcome()
    # FOR UPDATE: an approval of one of these drafts waits until this recompute commits, then
    # approves what it wrote; an approval that committed first makes us leave it alone.
    existing = {
        s.currency: s
        for s in Settlement.objects.select_for_update()
        .filter(host_id=host_id, licensor_id=licensor_id, period=run.period)
        .exclude(status__in=NOT_CURRENT_STATUSES)
    }
    computed_at = run.snapshot_at or timezone.now()
    for currency, bundle in sorted(bundles.items()):
        settlement = existing.get(currency)
        lines = sorted(bundle.lines, key=lambda item: _line_order(item[1]))
        total = sum((line.amount for _, line, _ in lines), Decimal(0))
        usage_digest, terms_digest = bundle.digests()
        fields = {
            "total": quantize(total, currency),
            "usage_digest": usage_digest,
            "terms_digest": terms_digest,
            "record_count": bundle.record_count,
            "flags": bundle.flags,
            "computed_at": computed_at,
            "run": run,
        }
        previous_total = None if settlement is None else settlement.total
        revised = False
        rated = {"versions": bundle.locked_versions, "agreements": bundle.locked_agreements}
        # -- disputes: a disputed settlement is revised when anything would change
        # (billing/revisions.py); otherwise it stays as it is, like a settled one.
        if settlement is not None and settlement.status == SettlementStatus.DISPUTED:
            new_lines = [line for _, line, _ in lines]
            if not revision_needed(disputed=settlement, lines=new_lines, usage_digest=usage_digest):
                outcome.settled.append(settlement)
                continue
            settlement = settlement_revise(disputed=settlement, fields=fields, **rated)
            revised = True
        # -- end disputes
        elif settlement is not None and settlement.status != SettlementStatus.DRAFT:
            outcome.settled.append(settlement)
            continue
        elif settlement is None:
            settlement = Settlement.objects.create(
                host_id=host_id,
                licensor_id=licensor_id,
                period=run.period,
                currency=currency,
                first_computed_at=computed_at,
                review_due_at=review_due_at(first_computed_at=computed_at, **rated),
                **fields,
            )
            settlement_event_record(
                settlement=settlement,
                actor=SYSTEM,
                action="computed",
                detail={"total": format(settlement.total, "f"), "run": run.pk},
            )
        else:
            before = (settlement.total, settlement.usage_digest, settlement.terms_digest)
            settlement.lines.all().delete()
            for name, value in fields.items():
                setattr(settlement, name, value)
            # The review window runs from the first computation; the terms that rated the
            # usage last may have changed since.
            settlement.review_due_at = review_due_at(
                first_computed_at=settlement.first_computed_at or computed_at, **rated
            )
            settlement.save()
            if before != (settlement.total, settlement.usage_digest, settlement.terms_digest):
                settlement_event_record(
                    settlement=settlement,
                    actor=SYSTEM,
                    action="recomputed",
                    detail={"total": format(settlement.total, "f"), "run": run.pk},
                )
        SettlementLine.objects.bulk_create(
            [
                line_to_row(
                    line,
                    settlement=settlement,
                    position=position,
                    license_id=license_id,
                    flags=flags,
                )
                for position, (license_id, line, flags) in enumerate(lines, start=1)
            ]
        )
        if revised:  # webhooks: a revision, created, or re-computed to another total
            settlement_event(settlement, "settlement.revised")
        elif previous_total != settlement.total:
            settlement_event(
                settlement, "settlement.created" if previous_total is None else "settlement.updated"
            )
        # Terms that rated usage are locked: from now on the catalog cannot change them, so this
        # settlement can be re-derived (--verify) from the same terms.
        versions = {i for i in bundle.locked_versions if ("version", i) not in catalog.locked}
        agreements = {i for i in bundle.locked_agreements if ("agreement", i) not in catalog.locked}
        if versions:
            LicenseVersion.objects.filter(pk__in=versions, locked_at__isnull=True).update(
                locked_at=computed_at
            )
        if agreements:
            Agreement.objects.filter(pk__in=agreements, locked_at__isnull=True).update(
                locked_at=computed_at
            )

        # Noted only after commit: a rolled-back pair must not leave its terms "locked" here.
        def remember(v: set[int] = versions, a: set[int] = agreements) -> None:
            catalog.locked.update([("version", i) for i in v] + [("agreement", i) for i in a])

        transaction.on_commit(remember)
        outcome.written.append(settlement)
    for currency, settlement in existing.items():
        if currency not in bundles and settlement.status == SettlementStatus.DRAFT:
            settlement.delete()  # a draft with no usage left
    return outcome


def _line_order(line: Line) -> tuple[object, ...]:
    return (
        LINE_KINDS.index(line.kind),
        line.period,
        line.license_version,
        line.model,
        line.customer_category,
    )


__all__ = [
    "PairOutcome",
    "billing_pair_fail",
    "billing_pair_settle",
    "billing_run_start",
    "pair_failure_text",
]
