"""What a billing run writes for a batch of (licensor, host) pairs: rate each pair's groups, add
its adjustments, and write its settlements, their lines and history, in the caller's transaction
(billing/runs.py owns the transaction, the pair rows and the run's progress).

The writes of a batch are few statements whatever its size: one read of the pairs' groups, one
of their current settlements (FOR UPDATE), one COPY each of new settlements and lines, one
multi-row INSERT of history events, one UPDATE of the recomputed drafts, one lock of the terms
used (billing/bulk.py). A pair's
rating is the same function as ever (`rerating.pair_period_rate`); only the round trips are
shared, so a batch writes exactly what its pairs would write one by one.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing import aggregation
from billing.bulk import NewRows, pairs_lookup, pairs_params, settlements_recompute, values_copy
from billing.events import settlement_event, subscriptions
from billing.history import SYSTEM, settlement_events_record
from billing.models import (
    NOT_CURRENT_STATUSES,
    SETTLED_STATUSES,
    BillingRun,
    BillingRunGroup,
    Settlement,
    SettlementLine,
    SettlementStatus,
)
from billing.rerating import (
    LINE_FIELDS,
    Bundle,
    CatalogSnapshot,
    line_values,
    pair_period_rate,
    settled_month_rerate,
)
from billing.revisions import review_due_at, review_terms, revision_needed, settlement_revise
from core.money import quantize
from core.vocabulary import LINE_KINDS
from licensing.models import Agreement, LicenseVersion
from licensing.rating import Line
from usage.selectors import periods_closed_by_completion

Pair = tuple[int, int]  # (host_id, licensor_id)

# A settlement line's columns as a batch writes them: its settlement, position and license, the
# engine line's fields, its flags.
_LINE_COLUMNS = ("settlement_id", "position", "license_id", *LINE_FIELDS, "flags")


@dataclass
class PairOutcome:
    """What one pair's settling did: the settlements it wrote (their ids) and those it found
    already settled."""

    written: list[Any] = field(default_factory=list)
    settled: list[Settlement] = field(default_factory=list)
    skipped: bool = False  # already done in this run, or the run was superseded


# What a batch reads of the current settlements of its pairs (`settlements_write`).
_CURRENT_FIELDS = (
    "id",
    "host_id",
    "licensor_id",
    "currency",
    "status",
    "total",
    "usage_digest",
    "terms_digest",
    "lines_digest",
    "first_computed_at",
)

# A pair's current settlements of a period, as `pairs_lookup` finds them: through the partial
# unique index of current settlements (its predicate, `NOT status IN (...)`, written the same way).
_CURRENT_SCOPE = "t.period = %s AND NOT (t.status IN ({}))".format(
    ", ".join(["%s"] * len(NOT_CURRENT_STATUSES))
)

_catalogs: dict[int, CatalogSnapshot] = {}
_NEW_SETTLEMENTS = NewRows(Settlement)
_NEW_ID = _NEW_SETTLEMENTS.columns.index("id")


def catalog_for_run(run_id: int) -> CatalogSnapshot:
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


def groups_query(*, run_id: int, pairs: list[Pair]) -> tuple[str, tuple[Any, ...]]:
    """The statement that reads the run's groups of `pairs` (`aggregation.COLUMNS`), in the
    order they were staged, and its parameters (for psycopg's cursor: binary arrays). One index
    lookup per pair (`bulk.pairs_lookup`): a plain `IN (unnest ...)` hashed all of the run's
    groups for every batch (40,000 rows, ~34 ms, 20 times at 10,000 pairs)."""
    sql = pairs_lookup(BillingRunGroup, aggregation.COLUMNS, "t.run_id = %s", binary=True)
    return sql, (*pairs_params(pairs), run_id)


def _groups_read(*, run_id: int, pairs: list[Pair]) -> list[dict[str, Any]]:
    """The run's groups of `pairs` (`groups_query`). Tens of thousands of rows a batch: read
    through psycopg with server-side binding, as the values PostgreSQL sends (ints, Decimals,
    strings), without a queryset's per-row machinery (half of this read's time at 10,000
    pairs)."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(*groups_query(run_id=run_id, pairs=pairs))
        return [dict(zip(aggregation.COLUMNS, row, strict=True)) for row in cursor]


def pairs_rate(
    *, run: BillingRun, pairs: list[Pair], catalog: CatalogSnapshot
) -> dict[Pair, dict[str, Bundle]]:
    """Each pair's bundles (one per currency): its groups of the run rated, plus adjustments."""
    rows: dict[Pair, list[dict[str, Any]]] = defaultdict(list)
    for row in _groups_read(run_id=run.pk, pairs=pairs):
        rows[(row["host_id"], row["licensor_id"])].append(row)
    rated: dict[Pair, dict[str, Bundle]] = {}
    for host_id, licensor_id in pairs:
        bundles = pair_period_rate(run.period, rows.get((host_id, licensor_id), []), catalog)
        _adjustments(
            host_id=host_id,
            licensor_id=licensor_id,
            period=run.period,
            snapshot_at=run.snapshot_at,
            bundles=bundles,
            catalog=catalog,
        )
        rated[(host_id, licensor_id)] = bundles
    return rated


@dataclass
class _Writes:
    """A batch's rows, written together at its end."""

    created: list[tuple[Any, ...]] = field(default_factory=list)  # NewRows(Settlement) rows
    recomputed: list[Settlement] = field(default_factory=list)
    # Recomputed drafts whose lines came out as they were: their lines stay in place.
    lines_kept: set[Any] = field(default_factory=set)
    lines: list[tuple[Any, ...]] = field(default_factory=list)  # values of _LINE_COLUMNS
    history: list[tuple[Any, str, Decimal]] = field(default_factory=list)  # (id, action, total)
    # (pair, settlement, type); a new settlement as its row, made a model only if anyone
    # listens.
    webhooks: list[tuple[Pair, Settlement | tuple[Any, ...], str]] = field(default_factory=list)
    versions: set[int] = field(default_factory=set)
    agreements: set[int] = field(default_factory=set)


def settlements_write(
    *, run: BillingRun, rated: dict[Pair, dict[str, Bundle]], catalog: CatalogSnapshot
) -> dict[Pair, PairOutcome]:
    """Write the settlements of every pair in `rated`, in the caller's transaction."""
    outcomes = {pair: PairOutcome() for pair in rated}
    if not rated:
        return outcomes
    # FOR UPDATE: an approval of one of these drafts waits until this recompute commits, then
    # approves what it wrote; an approval that committed first makes us leave it alone. Locked
    # in (host, licensor) order (`pairs_params`).
    # Only the columns a recompute reads (`_CURRENT_FIELDS`): a batch reads hundreds of rows,
    # and each timestamp column cost ~6 µs a row to parse. What needs the whole row loads it:
    # a disputed settlement before its revision, an announced one before its webhook (`_flush`).
    existing: dict[Pair, dict[str, Settlement]] = defaultdict(dict)
    for s in Settlement.objects.raw(
        pairs_lookup(Settlement, _CURRENT_FIELDS, _CURRENT_SCOPE, lock=True),
        [*pairs_params(list(rated)), run.period, *NOT_CURRENT_STATUSES],
    ):
        existing[(s.host_id, s.licensor_id)][s.currency] = s
    computed_at = run.snapshot_at or timezone.now()
    # The review days of every term that rated the batch, read once (not twice a settlement).
    bundles_all = [b for bundles in rated.values() for b in bundles.values()]
    known = review_terms(
        versions={v for b in bundles_all for v in b.locked_versions},
        agreements={a for b in bundles_all for a in b.locked_agreements},
    )

    def due_at(first: datetime, versions: set[int], agreements: set[int]) -> datetime | None:
        return review_due_at(
            first_computed_at=first, versions=versions, agreements=agreements, known=known
        )

    w = _Writes()
    now = timezone.now()
    for (host_id, licensor_id), bundles in rated.items():
        outcome = outcomes[(host_id, licensor_id)]
        current = existing.get((host_id, licensor_id), {})
        for currency, bundle in sorted(bundles.items()):
            settlement = current.get(currency)
            lines = sorted(bundle.lines, key=lambda item: _line_order(item[1]))
            total = sum((line.amount for _, line, _ in lines), Decimal(0))
            usage_digest, terms_digest = bundle.digests()
            line_rows = [
                (position, license_id, *line_values(line), flags)
                for position, (license_id, line, flags) in enumerate(lines, start=1)
            ]
            total = quantize(total, currency)
            fields = {
                "total": total,
                "usage_digest": usage_digest,
                "terms_digest": terms_digest,
                "record_count": bundle.record_count,
                "flags": bundle.flags,
                "computed_at": computed_at,
                "run": run,
                "lines_digest": _lines_digest(line_rows),
            }
            rated_by = {"versions": bundle.locked_versions, "agreements": bundle.locked_agreements}
            # -- disputes: a disputed settlement is revised when anything would change
            # (billing/revisions.py); otherwise it stays as it is, like a settled one.
            if settlement is not None and settlement.status == SettlementStatus.DISPUTED:
                settlement = Settlement.objects.get(pk=settlement.pk)  # whole, held FOR UPDATE
                new_lines = [line for _, line, _ in lines]
                if not revision_needed(
                    disputed=settlement, lines=new_lines, usage_digest=usage_digest
                ):
                    outcome.settled.append(settlement)
                    continue
                settlement = settlement_revise(disputed=settlement, fields=fields, **rated_by)
                pk = settlement.pk
                w.webhooks.append(((host_id, licensor_id), settlement, "settlement.revised"))
            # -- end disputes
            elif settlement is not None and settlement.status != SettlementStatus.DRAFT:
                outcome.settled.append(settlement)
                continue
            elif settlement is None:
                row = _NEW_SETTLEMENTS.row(
                    now,
                    {
                        "host_id": host_id,
                        "licensor_id": licensor_id,
                        "period": run.period,
                        "currency": currency,
                        "first_computed_at": computed_at,
                        "review_due_at": due_at(computed_at, **rated_by),
                        **{name: value for name, value in fields.items() if name != "run"},
                        "run_id": run.pk,
                    },
                )
                pk = row[_NEW_ID]
                w.created.append(row)
                w.history.append((pk, "computed", total))
                w.webhooks.append(((host_id, licensor_id), row, "settlement.created"))
            else:
                pk = settlement.pk
                before = (settlement.total, settlement.usage_digest, settlement.terms_digest)
                if settlement.lines_digest == fields["lines_digest"]:
                    w.lines_kept.add(settlement.pk)
                for name, value in fields.items():
                    setattr(settlement, name, value)
                # The review window runs from the first computation; the terms that rated the
                # usage last may have changed since.
                settlement.review_due_at = due_at(
                    settlement.first_computed_at or computed_at, **rated_by
                )
                settlement.updated_at = now
                w.recomputed.append(settlement)
                if before != (settlement.total, settlement.usage_digest, settlement.terms_digest):
                    w.history.append((pk, "recomputed", settlement.total))
                if before[0] != settlement.total:  # webhooks: re-computed to another total
                    w.webhooks.append(((host_id, licensor_id), settlement, "settlement.updated"))
            if pk not in w.lines_kept:
                w.lines += [(pk, *row) for row in line_rows]
            _terms_lock(w, bundle, catalog)
            outcome.written.append(pk)
        for currency, settlement in current.items():
            if currency not in bundles and settlement.status == SettlementStatus.DRAFT:
                settlement.delete()  # a draft with no usage left
    _flush(w, run=run, computed_at=computed_at, catalog=catalog)
    return outcomes


def _flush(w: _Writes, *, run: BillingRun, computed_at: datetime, catalog: CatalogSnapshot) -> None:
    if w.recomputed:
        rewritten = [s.pk for s in w.recomputed if s.pk not in w.lines_kept]
        if rewritten:
            SettlementLine.objects.filter(settlement__in=rewritten).delete()
        settlements_recompute(w.recomputed)
    values_copy(Settlement, _NEW_SETTLEMENTS.columns, w.created)
    values_copy(SettlementLine, _LINE_COLUMNS, w.lines)
    settlement_events_record(
        [
            (pk, SYSTEM, action, {"total": format(total, "f"), "run": run.pk})
            for pk, action, total in w.history
        ]
    )
    if w.webhooks:
        # One read of the endpoints for the batch, not one per settlement.
        endpoints = subscriptions(
            licensor_ids={licensor_id for (_, licensor_id), _, _ in w.webhooks},
            host_ids={host_id for (host_id, _), _, _ in w.webhooks},
        )
        # A webhook renders the whole settlement, when anyone listens: a new one is made a
        # model from its row; the recomputed drafts, read with a few columns, are read again
        # whole (as just written) in one query.
        events = [
            (_NEW_SETTLEMENTS.instance(s) if isinstance(s, tuple) else s, type)
            for _, s, type in (w.webhooks if endpoints else [])
        ]
        deferred = [s.pk for s, _ in events if s.get_deferred_fields()]
        whole = Settlement.objects.in_bulk(deferred) if deferred else {}
        for settlement, type in events:
            settlement_event(whole.get(settlement.pk, settlement), type, endpoints=endpoints)
    if w.versions:
        LicenseVersion.objects.filter(pk__in=w.versions, locked_at__isnull=True).update(
            locked_at=computed_at
        )
    if w.agreements:
        Agreement.objects.filter(pk__in=w.agreements, locked_at__isnull=True).update(
            locked_at=computed_at
        )

    # Noted only after commit: a rolled-back batch must not leave its terms "locked" here.
    def remember(v: set[int] = w.versions, a: set[int] = w.agreements) -> None:
        catalog.locked.update([("version", i) for i in v] + [("agreement", i) for i in a])

    transaction.on_commit(remember)


def _terms_lock(w: _Writes, bundle: Bundle, catalog: CatalogSnapshot) -> None:
    """Terms that rated usage are locked: from now on the catalog cannot change them, so the
    settlement can be re-derived (--verify) from the same terms."""
    w.versions |= {i for i in bundle.locked_versions if ("version", i) not in catalog.locked}
    w.agreements |= {i for i in bundle.locked_agreements if ("agreement", i) not in catalog.locked}


def _lines_digest(rows: list[tuple[Any, ...]]) -> str:
    """What identifies a settlement's lines as written (position, license, the line's values,
    flags): equal digests, equal rows. `repr` of ints, strings, Decimals, dates and lists is
    exact and stable; the digest is never shown to anyone nor compared across versions of the
    code (a new line column makes every digest differ once: the lines are then rewritten)."""
    return "blake2b:" + hashlib.blake2b(repr(rows).encode(), digest_size=20).hexdigest()


def _line_order(line: Line) -> tuple[object, ...]:
    return (
        LINE_KINDS.index(line.kind),
        line.period,
        line.license_version,
        line.model,
        line.customer_category,
    )


__all__ = ["PairOutcome", "catalog_for_run", "groups_query", "pairs_rate", "settlements_write"]
