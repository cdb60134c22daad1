"""Writes of billing: runs, the settlements of a (licensor, host) pair, approval and dispute.

The flow of a run (docs/billing.md):

1. `billing_run_start` aggregates the month in PostgreSQL into `BillingRunGroup` rows and lists
   the (licensor, host) pairs to bill;
2. `billing_pair_settle`, once per pair (a Celery task each, or a loop in `run_billing`), rates
   the pair's groups with `licensing.rating`, re-rates settled months that received usage since,
   and writes one draft settlement per currency; settled settlements are left as they are;
3. the licensor approves (`settlement_approve`: accrual posted to the ledger) or disputes.

Every step is idempotent: a pair already done in a run is skipped, a re-run recomputes drafts
from the same usage, and approval is a conditional update from `draft`.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from billing import aggregation
from billing.aggregation import UsageFilter, terms_from_row
from billing.models import (
    SETTLED_STATUSES,
    BillingRun,
    BillingRunGroup,
    BillingRunPair,
    PendingRerate,
    Settlement,
    SettlementLine,
    SettlementStatus,
)
from core.money import quantize, to_minor_units
from core.periods import period_bounds, previous_period
from licensing.models import Agreement, License, LicenseVersion
from licensing.rating import (
    EDITION,
    Billed,
    Edition,
    Line,
    RatingResult,
    UsageGroup,
    WindowState,
    rate,
    rerate_settled,
)
from licensing.rating.terms import Terms


class SettlementStateError(Exception):
    """The settlement is not in a state that allows the action (e.g. approving a disputed one)."""

    def __init__(self, settlement: Settlement, action: str) -> None:
        super().__init__(f"settlement {settlement.pk} is {settlement.status}: cannot {action} it")
        self.settlement = settlement
        self.action = action


def _digest(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# --- the run ---------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def billing_run_start(*, period: str, trigger: str = "task") -> BillingRun:
    """Start a run of `period`: aggregate its usage into groups and list the pairs to bill.

    An earlier run of the period that is still running is superseded: its remaining pair tasks
    stop, and this run's tasks recompute the same drafts from newer usage."""
    period_bounds(period)
    BillingRun.objects.filter(period=period, status=BillingRun.Status.RUNNING).update(
        status=BillingRun.Status.SUPERSEDED, finished_at=timezone.now()
    )
    # The aggregation's cut-off: usage received (by the ingest service's clock, the same as
    # this one) up to now. --verify re-rates a settlement from the records up to it.
    snapshot_at = timezone.now()
    run = BillingRun.objects.create(period=period, trigger=trigger, snapshot_at=snapshot_at)
    groups = aggregation.stage_groups(run_id=run.pk, period=period, received_until=snapshot_at)

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
    pairs.update(
        Settlement.objects.filter(period=period, status=SettlementStatus.DRAFT).values_list(
            "host_id", "licensor_id"
        )
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
    return run


def billing_run_fail(*, run_id: int, error: str) -> None:
    BillingRun.objects.filter(pk=run_id, status=BillingRun.Status.RUNNING).update(
        status=BillingRun.Status.FAILED, error=error[:10_000], finished_at=timezone.now()
    )


@dataclass
class PairOutcome:
    """What one pair task did: the settlements it wrote and those it found already settled."""

    written: list[Settlement] = field(default_factory=list)
    settled: list[Settlement] = field(default_factory=list)
    skipped: bool = False  # already done in this run, or the run was superseded


@dataclass
class _Bundle:
    """One currency's part of a pair's month while it is assembled."""

    lines: list[tuple[int, Line, list[str]]] = field(default_factory=list)  # license, line, flags
    usage_digests: dict[str, str] = field(default_factory=dict)  # license slug -> digest
    terms_digests: dict[str, str] = field(default_factory=dict)
    flags: list[dict[str, Any]] = field(default_factory=list)
    record_count: int = 0
    locked_versions: set[int] = field(default_factory=set)
    locked_agreements: set[int] = field(default_factory=set)

    def digests(self) -> tuple[str, str]:
        """One license: the engine's digests as they are; several (or none, a settlement of
        adjustments only): a digest of theirs by license slug."""
        if len(self.usage_digests) == 1:
            return next(iter(self.usage_digests.values())), next(iter(self.terms_digests.values()))
        return _digest(self.usage_digests), _digest(self.terms_digests)


def _group(row: dict[str, Any]) -> UsageGroup:
    return UsageGroup(
        model=row["model_slug"],
        customer_category=row["customer_category"],
        terms_label=row["terms_label"],
        region=row["region"] or None,
        input_tokens=int(row["input_tokens"]),
        cached_input_tokens=int(row["cached_input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        requests=int(row["requests"]),
        revenue=Decimal(row["revenue"]),
        # A group made only of corrections whose original was received after the snapshot.
        record_count=max(int(row["record_count"]), 1),
        revenue_before=Decimal(row["revenue_before"]),
        tokens_before=int(row["tokens_before"]),
    )


@dataclass
class CatalogSnapshot:
    """The catalog and the pending re-ratings as one run sees them, read once per run and process
    instead of once per pair (a run has hundreds of pairs; the catalog has tens of terms).

    A catalog change made while a run is going is seen by the next run; terms that have rated
    usage are locked anyway, so only terms not used yet could change meanwhile."""

    license_slugs: dict[int, str]
    versions: dict[int, list[tuple[int, Terms]]]  # license id -> (row id, terms)
    agreements: dict[tuple[int, int], list[tuple[int, Terms]]]  # (host, license) -> ...
    locked: set[tuple[str, int]]  # ("version" | "agreement", row id) already locked
    rerate: dict[tuple[int, int], set[str]] | None = None  # (host, licensor) -> settled months

    @classmethod
    def load(cls) -> CatalogSnapshot:
        versions: dict[int, list[tuple[int, Terms]]] = defaultdict(list)
        agreements: dict[tuple[int, int], list[tuple[int, Terms]]] = defaultdict(list)
        locked: set[tuple[str, int]] = set()
        for v in LicenseVersion.objects.all():
            versions[v.license_id].append((v.pk, terms_from_row(v)))
            if v.locked_at is not None:
                locked.add(("version", v.pk))
        for a in Agreement.objects.all():
            agreements[(a.host_id, a.license_id)].append((a.pk, terms_from_row(a)))
            if a.locked_at is not None:
                locked.add(("agreement", a.pk))
        return cls(
            license_slugs=dict(License.objects.values_list("id", "slug")),
            versions=dict(versions),
            agreements=dict(agreements),
            locked=locked,
        )

    def terms(self, license_id: int, host_id: int) -> list[Terms]:
        return [t for _, t in self.versions.get(license_id, [])] + [
            t for _, t in self.agreements.get((host_id, license_id), [])
        ]

    def periods_to_rerate(self, *, host_id: int, licensor_id: int, period: str) -> set[str]:
        """Earlier months of the pair with usage their settlement did not rate: late records,
        and records that arrived while the draft waited for approval (PendingRerate)."""
        if self.rerate is None:
            rerate: dict[tuple[int, int], set[str]] = defaultdict(set)
            for h, lic, p in aggregation.late_usage_periods(before_period=period):
                rerate[(h, lic)].add(p)
            for h, lic, p in PendingRerate.objects.filter(period__lt=period).values_list(
                "host_id", "licensor_id", "period"
            ):
                rerate[(h, lic)].add(p)
            self.rerate = dict(rerate)
        return self.rerate.get((host_id, licensor_id), set())


_snapshots: dict[int, CatalogSnapshot] = {}


def _snapshot_for_run(run_id: int) -> CatalogSnapshot:
    if run_id not in _snapshots:
        _snapshots.clear()  # one run at a time per process is the common case; keep memory flat
        _snapshots[run_id] = CatalogSnapshot.load()
    return _snapshots[run_id]


def _rate_license(
    period: str,
    rows: Sequence[dict[str, Any]],
    catalog: CatalogSnapshot,
    edition: Edition = EDITION,
) -> RatingResult:
    """Rate one (host, license) month from its aggregated rows."""
    year = period_bounds(period)[0].year
    first = rows[0]
    window = WindowState(year, Decimal(first["ytd_revenue"]), int(first["ytd_tokens"]))
    return rate(
        period=period,
        terms=catalog.terms(first["license_id"], first["host_id"]),
        usage=[_group(r) for r in rows],
        window_state=window,
        edition=edition,
    )


def _line_flags(line: Line, flags: Iterable[Any]) -> list[str]:
    return sorted(
        {
            f.kind
            for f in flags
            if f.license_version == line.license_version
            and f.model == line.model
            and f.customer_category == line.customer_category
        }
    )


def rate_pair_period(
    period: str,
    rows: Iterable[dict[str, Any]],
    catalog: CatalogSnapshot,
    edition: Edition = EDITION,
) -> dict[str, _Bundle]:
    """A pair's own month, per currency: lines, flags and digests from its aggregated rows."""
    by_license: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_license[row["license_id"]].append(row)
    bundles: dict[str, _Bundle] = defaultdict(_Bundle)
    for license_id, license_rows in sorted(by_license.items()):
        result = _rate_license(period, license_rows, catalog, edition)
        currency = result.currency or license_rows[0]["currency"]
        bundle = bundles[currency]
        slug = catalog.license_slugs[license_id]
        bundle.usage_digests[slug] = result.usage_digest
        bundle.terms_digests[slug] = result.terms_digest
        bundle.record_count += sum(int(r["record_count"]) for r in license_rows)
        for line in result.lines:
            bundle.lines.append((license_id, line, _line_flags(line, result.flags)))
        bundle.flags += [{"license": slug, **f.to_json()} for f in result.flags]
        for r in license_rows:
            if r["terms_kind"] == "version":
                bundle.locked_versions.add(r["terms_id"])
            elif r["terms_kind"] == "agreement":
                bundle.locked_agreements.add(r["terms_id"])
    return dict(bundles)


def _line_from_row(row: SettlementLine) -> Line:
    return Line(
        kind=row.kind,  # type: ignore[arg-type]
        model=row.model,
        customer_category=row.customer_category,
        period=row.period,
        license_version=row.license_version,
        input_tokens=row.input_tokens,
        cached_input_tokens=row.cached_input_tokens,
        output_tokens=row.output_tokens,
        requests=row.requests,
        revenue=row.revenue,
        amount=row.amount,
        description=row.description,
    )


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
    return sorted(set(settled))


def _billing_history(
    *,
    host_id: int,
    licensor_id: int,
    period: str,
    license_id: int,
    billed: Iterable[SettlementLine],
    cache: dict[datetime, list[dict[str, Any]]],
) -> list[Billed]:
    """The settlements that billed a settled month, oldest first: their lines of it and the
    month's usage received by their `computed_at` (aggregated only if the engine asks). With it
    the engine tells a month billed under an earlier edition of the rules (docs/rating.md)."""
    year = period_bounds(period)[0].year
    lines: dict[Any, list[Line]] = defaultdict(list)
    computed: dict[Any, datetime] = {}
    for row in billed:
        lines[row.settlement_id].append(_line_from_row(row))
        computed[row.settlement_id] = row.settlement.computed_at

    def usage(until: datetime) -> tuple[list[UsageGroup], WindowState]:
        if until not in cache:
            who = UsageFilter(host_id=host_id, licensor_id=licensor_id, received_until=until)
            cache[until] = aggregation.aggregate_groups(period, who)
        rows = [r for r in cache[until] if r["license_id"] == license_id]
        if not rows:
            return [], WindowState(year)
        ytd = WindowState(year, Decimal(rows[0]["ytd_revenue"]), int(rows[0]["ytd_tokens"]))
        return [_group(r) for r in rows], ytd

    def loader(until: datetime) -> Callable[[], tuple[list[UsageGroup], WindowState]]:
        return lambda: usage(until)

    return [
        Billed(tuple(lines[pk]), loader(computed[pk]))
        for pk in sorted(computed, key=lambda pk: (computed[pk], str(pk)))
    ]


def _adjustments(
    *,
    host_id: int,
    licensor_id: int,
    period: str,
    snapshot_at: datetime | None,
    bundles: dict[str, _Bundle],
    catalog: CatalogSnapshot,
) -> None:
    """Add to `bundles` the adjustment lines of every settled month that received usage since:
    re-rated with all its usage, minus everything already billed for it (its settlement and the
    adjustments of other settlements; never the drafts of `period` being recomputed)."""
    for settled_period in _settled_periods_to_rerate(
        host_id=host_id, licensor_id=licensor_id, period=period, catalog=catalog
    ):
        rows = aggregation.aggregate_groups(
            settled_period,
            UsageFilter(host_id=host_id, licensor_id=licensor_id, received_until=snapshot_at),
        )
        by_license: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_license[row["license_id"]].append(row)
        billed_rows: dict[datetime, list[dict[str, Any]]] = {}
        for license_id, license_rows in sorted(by_license.items()):
            billed = (
                SettlementLine.objects.filter(
                    settlement__host_id=host_id,
                    settlement__licensor_id=licensor_id,
                    license_id=license_id,
                    period=settled_period,
                )
                .exclude(settlement__status=SettlementStatus.VOID)
                .exclude(settlement__period=period, settlement__status=SettlementStatus.DRAFT)
            )
            year = period_bounds(settled_period)[0].year
            first = license_rows[0]
            billed_lines = list(billed.select_related("settlement"))
            result = rerate_settled(
                period=settled_period,
                terms=catalog.terms(license_id, host_id),
                usage=[_group(r) for r in license_rows],
                window_state=WindowState(
                    year, Decimal(first["ytd_revenue"]), int(first["ytd_tokens"])
                ),
                settled=[_line_from_row(b) for b in billed_lines],
                history=_billing_history(
                    host_id=host_id,
                    licensor_id=licensor_id,
                    period=settled_period,
                    license_id=license_id,
                    billed=billed_lines,
                    cache=billed_rows,
                ),
            )
            if not result.lines:
                continue
            currency = result.currency or first["currency"]
            bundle = bundles.setdefault(currency, _Bundle())
            # The settlement's digests stay those of its own month's usage and terms: the
            # adjustment lines are differences against other settlements, not a rating.
            for line in result.lines:
                bundle.lines.append((license_id, line, []))


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
    with connection.cursor() as cursor:
        # A draft is re-derivable from usage, so this commit need not wait for the WAL flush: a
        # database crash can only lose whole pair transactions (never part of one), and their
        # tasks, not yet acknowledged, run again. Approval, which posts money, stays durable.
        cursor.execute("SET LOCAL synchronous_commit TO off")
    # FOR UPDATE: a duplicate delivery of this task waits here, then sees done_at and stops.
    pair = (
        BillingRunPair.objects.select_for_update(of=("self",))
        .select_related("run")
        .get(run_id=run_id, host_id=host_id, licensor_id=licensor_id)
    )
    run = pair.run
    if pair.done_at is not None or run.status == BillingRun.Status.SUPERSEDED:
        return PairOutcome(skipped=True)
    _pair_lock(host_id, licensor_id, run.period)

    period = run.period
    catalog = _snapshot_for_run(run_id)
    rows = list(
        BillingRunGroup.objects.filter(run_id=run_id, host_id=host_id, licensor_id=licensor_id)
        .order_by("id")
        .values(*aggregation.COLUMNS)
    )
    bundles = rate_pair_period(period, rows, catalog)
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
    last = Q(status=BillingRun.Status.RUNNING) & Q(pairs_done__gte=F("pairs_total") - 1)
    BillingRun.objects.filter(pk=run_id).update(
        pairs_done=F("pairs_done") + 1,
        settlements_written=F("settlements_written") + len(outcome.written),
        settlements_settled=F("settlements_settled") + len(outcome.settled),
        status=Case(When(last, then=Value(BillingRun.Status.DONE)), default=F("status")),
        finished_at=Case(When(last, then=Value(now)), default=F("finished_at")),
    )
    return outcome


def _write_settlements(
    *,
    run: BillingRun,
    host_id: int,
    licensor_id: int,
    bundles: dict[str, _Bundle],
    catalog: CatalogSnapshot,
) -> PairOutcome:
    outcome = PairOutcome()
    # FOR UPDATE: an approval of one of these drafts waits until this recompute commits, then
    # approves what it wrote; an approval that committed first makes us leave it alone.
    existing = {
        s.currency: s
        for s in Settlement.objects.select_for_update().filter(
            host_id=host_id, licensor_id=licensor_id, period=run.period
        )
    }
    computed_at = run.snapshot_at or timezone.now()
    for currency, bundle in sorted(bundles.items()):
        settlement = existing.get(currency)
        if settlement is not None and settlement.status != SettlementStatus.DRAFT:
            outcome.settled.append(settlement)
            continue
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
        if settlement is None:
            settlement = Settlement.objects.create(
                host_id=host_id,
                licensor_id=licensor_id,
                period=run.period,
                currency=currency,
                **fields,
            )
        else:
            settlement.lines.all().delete()
            for name, value in fields.items():
                setattr(settlement, name, value)
            settlement.save()
        SettlementLine.objects.bulk_create(
            [
                SettlementLine(
                    settlement=settlement,
                    position=position,
                    license_id=license_id,
                    kind=line.kind,
                    model=line.model,
                    customer_category=line.customer_category,
                    period=line.period,
                    license_version=line.license_version,
                    input_tokens=line.input_tokens,
                    cached_input_tokens=line.cached_input_tokens,
                    output_tokens=line.output_tokens,
                    requests=line.requests,
                    revenue=line.revenue,
                    amount=line.amount,
                    description=line.description,
                    flags=flags,
                )
                for position, (license_id, line, flags) in enumerate(lines, start=1)
            ]
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


_KIND_ORDER = {"usage": 0, "flat_fee": 1, "minimum_true_up": 2, "cap_credit": 3, "adjustment": 4}


def _line_order(line: Line) -> tuple[object, ...]:
    return (
        _KIND_ORDER[line.kind],
        line.period,
        line.license_version,
        line.model,
        line.customer_category,
    )


# --- approval and dispute --------------------------------------------------------------------


def _platform_fee_minor(amount_minor: int, currency: str) -> int:
    percent = Decimal(settings.TOLLGATE_PLATFORM_FEE_PERCENT or "0")
    if not percent:
        return 0
    fee = quantize(Decimal(amount_minor) * percent / 100, "JPY")  # whole minor units, half up
    return int(fee)


def _close_and_check(settlement: Settlement) -> None:
    """Close the month for late usage, then look for records that arrived while the draft waited
    (not late, since the month was still open, and not in the draft): the next run re-rates the
    month with them. period_close waits for in-flight ingest batches of the host, so after it
    every record of the month is either counted here or marked late."""
    from usage.services import period_close

    period_close(host=settlement.host, licensor=settlement.licensor, period=settlement.period)
    rated = sum(
        Settlement.objects.filter(
            host_id=settlement.host_id,
            licensor_id=settlement.licensor_id,
            period=settlement.period,
        )
        .exclude(status=SettlementStatus.VOID)
        .values_list("record_count", flat=True)
    )
    there = aggregation.count_records(
        host_id=settlement.host_id, licensor_id=settlement.licensor_id, period=settlement.period
    )
    if there != rated:
        PendingRerate.objects.get_or_create(
            host_id=settlement.host_id,
            licensor_id=settlement.licensor_id,
            period=settlement.period,
        )


def _claim(settlement: Settlement, *, to: str, action: str, **fields: Any) -> Settlement | None:
    """Move a draft to `to` with a conditional update: of two concurrent decisions, exactly one
    wins; the other sees the winner's status. Returns the updated row, or None when it already
    had status `to` (an idempotent retry)."""
    claimed = Settlement.objects.filter(pk=settlement.pk, status=SettlementStatus.DRAFT).update(
        status=to, decided_by=fields.pop("actor"), updated_at=timezone.now(), **fields
    )
    fresh = Settlement.objects.select_related("host", "licensor").get(pk=settlement.pk)
    if claimed:
        return fresh
    if fresh.status == to:
        return None
    raise SettlementStateError(fresh, action)


@transaction.atomic(durable=True)
def settlement_approve(*, settlement: Settlement, actor: str) -> Settlement:
    """The licensor accepts the settlement: it is settled, the month is closed for late usage,
    and the accrual (host receivable / licensor payable) is posted to the ledger, once."""
    fresh = _claim(
        settlement,
        to=SettlementStatus.APPROVED,
        action="approve",
        actor=actor,
        approved_at=timezone.now(),
    )
    if fresh is None:
        return Settlement.objects.get(pk=settlement.pk)
    _close_and_check(fresh)
    amount_minor = to_minor_units(quantize(fresh.total, fresh.currency), fresh.currency)
    if amount_minor:
        from ledger.services import post_settlement_accrual, post_settlement_credit

        # A negative total (late corrections took back more than the month added) is a credit
        # to the host: the mirror entry. A zero total posts nothing (no zero amounts).
        post = post_settlement_accrual if amount_minor > 0 else post_settlement_credit
        # Last in the transaction: posting takes the ledger's chain lock, held until commit.
        post(
            settlement_id=str(fresh.pk),
            host=fresh.host,
            licensor=fresh.licensor,
            currency=fresh.currency,
            amount_minor=abs(amount_minor),
            platform_fee_minor=_platform_fee_minor(abs(amount_minor), fresh.currency),
            memo=f"Settlement {fresh.licensor.slug}/{fresh.host.slug} {fresh.period} approved",
        )
    if amount_minor > 0 and settings.STRIPE_API_KEY:
        _queue_invoice(str(fresh.pk))
    return fresh


def _queue_invoice(settlement_id: str) -> None:
    """Invoice through Stripe once the approval is committed (docs/stripe.md); without
    STRIPE_API_KEY approval stops at `approved`. robust: in-process (eager) Celery runs the task
    right here, and a Stripe failure must not turn a committed approval into an error; the
    hourly sweep and the admin's "Send invoice" retry it."""
    from billing.tasks import invoice_settlement

    transaction.on_commit(lambda: invoice_settlement.delay(settlement_id), robust=True)


@transaction.atomic(durable=True)
def settlement_dispute(*, settlement: Settlement, reason: str, actor: str) -> Settlement:
    """The licensor contests the settlement: it is settled as it is (nothing is posted), with the
    reason on record; the month is closed, so later usage is billed as adjustments."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a dispute needs a reason")
    fresh = _claim(
        settlement,
        to=SettlementStatus.DISPUTED,
        action="dispute",
        actor=actor,
        disputed_at=timezone.now(),
        dispute_reason=reason,
    )
    if fresh is None:
        return Settlement.objects.get(pk=settlement.pk)
    _close_and_check(fresh)
    return fresh


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyProblem:
    settlement: Settlement
    message: str

    def __str__(self) -> str:
        s = self.settlement
        return (
            f"settlement {s.pk} ({s.licensor.slug}/{s.host.slug} {s.period} {s.currency}): "
            f"{self.message}"
        )


def _line_tuple(line: Line) -> tuple[object, ...]:
    return (
        line.kind,
        line.model,
        line.customer_category,
        line.period,
        line.license_version,
        line.input_tokens,
        line.cached_input_tokens,
        line.output_tokens,
        line.requests,
        line.revenue,
        line.amount,
        line.description,
    )


def settlements_verify(*, period: str) -> tuple[int, list[VerifyProblem]]:
    """Re-rate every settled settlement of `period` from the usage it was computed from (records
    received by its `computed_at`, late ones excluded) and the locked terms; report any line or
    digest that would differ, and re-derive its adjustment lines of earlier months.
    Returns (settlements checked, problems)."""
    catalog = CatalogSnapshot.load()
    problems: list[VerifyProblem] = []
    settled = list(
        Settlement.objects.filter(period=period, status__in=SETTLED_STATUSES)
        .select_related("host", "licensor")
        .order_by("licensor__slug", "host__slug", "currency")
    )
    for s in settled:
        rows = aggregation.aggregate_groups(
            period,
            UsageFilter(
                host_id=s.host_id,
                licensor_id=s.licensor_id,
                include_late=False,
                received_until=s.computed_at,
            ),
        )
        bundle = rate_pair_period(period, rows, catalog).get(s.currency, _Bundle())
        expected = sorted((_line_tuple(line) for _, line, _ in bundle.lines), key=lambda t: repr(t))
        stored = sorted(
            (
                _line_tuple(_line_from_row(row))
                for row in s.lines.exclude(kind="adjustment")
            ),
            key=lambda t: repr(t),
        )
        if expected != stored:
            # Written under edition 1 of the rules (docs/rating.md, "Editions")? Then it is
            # reproduced by that edition.
            old = rate_pair_period(period, rows, catalog, edition=1).get(s.currency, _Bundle())
            old_expected = sorted((_line_tuple(line) for _, line, _ in old.lines), key=repr)
            if old_expected == stored:
                bundle, expected = old, old_expected
        if expected != stored:
            diff = [t for t in stored if t not in expected] + [
                t for t in expected if t not in stored
            ]
            problems.append(VerifyProblem(s, f"lines differ from a re-rating: {diff[:2]}"))
        usage_digest, terms_digest = bundle.digests()
        if usage_digest != s.usage_digest:
            problems.append(VerifyProblem(s, "usage_digest differs from a re-rating"))
        if terms_digest != s.terms_digest:
            problems.append(VerifyProblem(s, "terms_digest differs from a re-rating"))
        own_total = sum(
            (line.amount for line in s.lines.all() if line.kind != "adjustment"),
            Decimal(0),
        )
        expected_total = sum((line.amount for _, line, _ in bundle.lines), Decimal(0))
        if own_total != expected_total:
            problems.append(
                VerifyProblem(s, f"total of the month's lines {own_total} != {expected_total}")
            )
        problems += _verify_adjustments(s, catalog)
    return len(settled), problems


def _verify_adjustments(s: Settlement, catalog: CatalogSnapshot) -> list[VerifyProblem]:
    """Re-derive a settlement's adjustment lines as its run did: each earlier month it adjusts,
    re-rated with the usage received by `s.computed_at`, minus what other settlements computed
    before it had billed for that month."""
    stored_rows = list(s.lines.filter(kind="adjustment"))
    expected: list[tuple[object, ...]] = []
    expected_1: list[tuple[object, ...]] = []  # edition 1 (docs/rating.md, "Editions")
    for period in sorted({row.period for row in stored_rows}):
        rows = aggregation.aggregate_groups(
            period,
            UsageFilter(host_id=s.host_id, licensor_id=s.licensor_id, received_until=s.computed_at),
        )
        by_license: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_license[row["license_id"]].append(row)
        billed_rows: dict[datetime, list[dict[str, Any]]] = {}
        for license_id, license_rows in sorted(by_license.items()):
            billed = (
                SettlementLine.objects.filter(
                    settlement__host_id=s.host_id,
                    settlement__licensor_id=s.licensor_id,
                    settlement__computed_at__lt=s.computed_at,
                    license_id=license_id,
                    period=period,
                )
                .exclude(settlement=s)
                .exclude(settlement__status=SettlementStatus.VOID)
            )
            first = license_rows[0]
            billed_lines = list(billed.select_related("settlement"))
            rerating: dict[str, Any] = {
                "period": period,
                "terms": catalog.terms(license_id, s.host_id),
                "usage": [_group(r) for r in license_rows],
                "window_state": WindowState(
                    period_bounds(period)[0].year,
                    Decimal(first["ytd_revenue"]),
                    int(first["ytd_tokens"]),
                ),
                "settled": [_line_from_row(b) for b in billed_lines],
            }
            result = rerate_settled(
                **rerating,
                history=_billing_history(
                    host_id=s.host_id,
                    licensor_id=s.licensor_id,
                    period=period,
                    license_id=license_id,
                    billed=billed_lines,
                    cache=billed_rows,
                ),
            )
            if (result.currency or first["currency"]) == s.currency:
                expected += [_line_tuple(line) for line in result.lines]
                # As edition 1's code derived it, for a settlement written before edition 2.
                old = rerate_settled(**rerating, edition=1)
                expected_1 += [_line_tuple(line) for line in old.lines]
    stored = [_line_tuple(_line_from_row(row)) for row in stored_rows]
    if sorted(stored, key=repr) in (sorted(expected, key=repr), sorted(expected_1, key=repr)):
        return []
    diff = [t for t in stored if t not in expected] + [t for t in expected if t not in stored]
    return [VerifyProblem(s, f"adjustment lines differ from a re-rating: {diff[:2]}")]


__all__ = [
    "PairOutcome",
    "SettlementStateError",
    "VerifyProblem",
    "billing_pair_settle",
    "billing_run_fail",
    "billing_run_start",
    "previous_period",
    "settlement_approve",
    "settlement_dispute",
    "settlements_verify",
]
