"""The month's usage as groups, computed by PostgreSQL (aggregate in SQL: Python sees groups,
never a month of rows; docs/performance.md, "Billing").

One statement does it all:

1. *Buckets.* Every `effective_from` of a version or agreement that falls inside the month splits
   it; `width_bucket(occurred_at, boundaries)` puts each record in a bucket within which no terms
   change. The bulk of the month is then a plain `GROUP BY` (the cost of the bare aggregate plus
   one comparison per record), no join per record.
2. *Thresholds.* Records of licenses whose terms have `above` thresholds take another path: they
   are netted with their corrections, then running totals per (host, license) in event-time order
   `(occurred_at, event_id)` come from window functions, and each record is classed below /
   crossing / above every threshold point (`licensing.rating.position_class`); a crossing record is
   a group of its own, as `licensing.rating.group_records` requires. The opening offsets
   (`revenue_before`, `tokens_before`) of a group are the minimum of its records' (running totals
   only grow: net records are >= 0). Without thresholds the offsets play no part in any amount and
   are reported as 0, so the common path needs no sort of the month.
3. *Terms.* Each bucket's terms are chosen in Python by `licensing.rating.terms_in_force` at the
   bucket's start (`terms_by_bucket`: per license, and per host with an agreement) and handed to
   the statement as a small table it joins. Groups are then merged per terms label.

Event ids are compared `COLLATE "C"` (byte order, as Python compares them).

psycopg prepares a statement after 5 executions and PostgreSQL may then switch to a generic plan,
much slower on this query (docs/performance.md, "Billing"); the cursor here never prepares
(`prepare=False`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection

from core.periods import period_bounds
from licensing.models import Agreement, LicenseVersion
from licensing.rating import Threshold, parse_rules, terms_in_force, threshold_points
from licensing.rating.terms import Terms
from usage.partitions import month_relation

COLUMNS = (
    "host_id",
    "licensor_id",
    "license_id",
    "model_slug",
    "customer_category",
    "region",
    "currency",
    "terms_kind",
    "terms_id",
    "terms_label",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "requests",
    "revenue",
    "record_count",
    "revenue_before",
    "tokens_before",
    "ytd_revenue",
    "ytd_tokens",
)


@dataclass(frozen=True)
class UsageFilter:
    """Which usage of the month to aggregate.

    `host_id`/`licensor_id`: one pair (re-rating, --verify); None: every pair (the run).
    `include_late`: False to rate a settled month as it was settled, without the late records.
    `received_until`: only records received up to this instant (a settlement's `computed_at`).
    """

    host_id: int | None = None
    licensor_id: int | None = None
    include_late: bool = True
    received_until: datetime | None = None


def terms_from_row(row: LicenseVersion | Agreement) -> Terms:
    return Terms(
        label=row.label,
        kind="agreement" if isinstance(row, Agreement) else "version",
        effective_from=row.effective_from,
        currency=row.currency,
        rules=parse_rules(row.rules, "rules"),
        minimum_per_month=row.minimum_per_month,
        cap_per_month=row.cap_per_month,
        attribution=row.attribution or None,
    )


def license_thresholds() -> dict[int, frozenset[Threshold]]:
    """Per license, every threshold point of any of its versions and agreements (a superset of
    those in force is harmless: it only splits groups more finely)."""
    points: dict[int, set[Threshold]] = {}
    rows: list[LicenseVersion | Agreement] = [
        *LicenseVersion.objects.all(),
        *Agreement.objects.all(),
    ]
    for row in rows:
        found = threshold_points([terms_from_row(row)])
        if found:
            points.setdefault(row.license_id, set()).update(found)
    return {license_id: frozenset(p) for license_id, p in points.items()}


def terms_by_bucket(starts: list[datetime]) -> list[dict[str, Any]]:
    """The terms in force in each bucket of a month, by `licensing.rating.terms_in_force` (the one
    definition of the rule; the SQL below only looks its answers up).

    `starts[i]` is where bucket `i` begins; no terms take effect inside a bucket, so the terms in
    force at its start hold for all of it. One entry per license and bucket (`host_id` None: a
    host without an agreement of that license) and one per host with an agreement of the license
    and bucket; nothing where nothing is in force. A catalog holds tens of terms, so this is
    small whatever the month's usage."""
    versions: dict[int, list[LicenseVersion]] = {}
    for v in LicenseVersion.objects.only("id", "license_id", "label", "effective_from"):
        versions.setdefault(v.license_id, []).append(v)
    agreements: dict[tuple[int | None, int], list[Agreement]] = {
        (None, license_id): [] for license_id in versions
    }
    for a in Agreement.objects.only("id", "host_id", "license_id", "label", "effective_from"):
        agreements.setdefault((a.host_id, a.license_id), []).append(a)
    out: list[dict[str, Any]] = []
    for (host_id, license_id), own in agreements.items():
        for bucket, lo in enumerate(starts):
            terms = terms_in_force(versions.get(license_id, []), own, lo)
            if terms is not None:
                out.append(
                    {
                        "host_id": host_id,
                        "license_id": license_id,
                        "bucket": bucket,
                        "kind": terms.kind,
                        "id": terms.pk,
                        "label": terms.label,
                    }
                )
    return out


def _boundaries(start: datetime, end: datetime) -> list[datetime]:
    found = set(
        LicenseVersion.objects.filter(effective_from__gt=start, effective_from__lt=end).values_list(
            "effective_from", flat=True
        )
    ) | set(
        Agreement.objects.filter(effective_from__gt=start, effective_from__lt=end).values_list(
            "effective_from", flat=True
        )
    )
    return sorted(found)


def _where(f: UsageFilter, params: dict[str, Any]) -> str:
    clauses = ["u.occurred_at >= %(start)s", "u.occurred_at < %(end)s"]
    if f.host_id is not None:
        clauses.append("u.host_id = %(host_id)s")
        params["host_id"] = f.host_id
    if f.licensor_id is not None:
        clauses.append("u.licensor_id = %(licensor_id)s")
        params["licensor_id"] = f.licensor_id
    if not f.include_late:
        clauses.append("NOT u.late")
    if f.received_until is not None:
        clauses.append("u.received_at <= %(received_until)s")
        params["received_until"] = f.received_until
    return " AND ".join(clauses)


def groups_sql(period: str, f: UsageFilter) -> tuple[str, dict[str, Any]]:
    """The aggregation statement and its parameters; its rows are `COLUMNS`."""
    start, end = period_bounds(period)
    params: dict[str, Any] = {
        "start": start,
        "end": end,
        "year_start": datetime(start.year, 1, 1, tzinfo=UTC),
    }
    where = _where(f, params)
    # The month's partition by name: its own extended statistics give the planner the real
    # number of groups, so it hashes (usage/partitions.py); the parent's need a manual ANALYZE.
    month = month_relation(start.year, start.month)
    bounds = _boundaries(start, end)
    if bounds:
        params["bounds"] = bounds
        # Bucket 0 is [start, bounds[0]), bucket i [bounds[i-1], bounds[i]).
        bucket = "width_bucket(u.occurred_at, %(bounds)s::timestamptz[])"
        plain_keys = "1, 2, 3, 4, 5, 6, 7, 8"
    else:
        bucket = "0"
        # A constant is not grouped by: it would be hashed with every record of the month.
        plain_keys = "1, 2, 3, 4, 5, 6, 7"
    params["in_force"] = json.dumps(terms_by_bucket([start, *bounds]))

    thresholds = license_thresholds()
    params["tlicenses"] = sorted(thresholds)
    # The plain part leaves the threshold licenses to the window part; with none, no test of
    # each record against an empty list. With both, the month's aggregation runs as fast as
    # the bare GROUP BY (2.29 against 2.61 s at 10M rows: docs/performance.md, "Billing").
    plain_where = (
        f"{where} AND u.license_id <> ALL(%(tlicenses)s::bigint[])" if thresholds else where
    )
    # S608: every interpolated piece below is a fixed fragment of this module; values are
    # always bound parameters.
    parts = [
        f"""
        SELECT u.host_id, u.licensor_id, u.license_id, u.model_id, u.customer_category, u.region,
               u.currency, {bucket} AS bucket, '' AS sides, NULL::text AS single,
               sum(u.input_tokens) AS it, sum(u.cached_input_tokens) AS ct,
               sum(u.output_tokens) AS ot, sum(u.requests) AS rq, sum(u.revenue) AS rev,
               count(*) FILTER (WHERE u.corrects = '') AS n,
               0::numeric AS rev_before, 0::numeric AS tok_before
        FROM {month} u
        WHERE {plain_where}
        GROUP BY {plain_keys}
        """  # noqa: S608
    ]
    ctes = ""
    if thresholds:
        params["points"] = json.dumps(
            [
                {
                    "license_id": license_id,
                    "metric": p.metric,
                    "window": p.window,
                    "amount": str(p.amount),
                    "ord": i,
                }
                for license_id, points in sorted(thresholds.items())
                for i, p in enumerate(sorted(points))
            ]
        )
        ctes = f"""
        points AS (
            SELECT (e->>'license_id')::bigint AS license_id, e->>'metric' AS metric,
                   e->>'window' AS win, (e->>'amount')::numeric AS amount, (e->>'ord')::int AS ord
            FROM jsonb_array_elements(%(points)s::jsonb) AS e
        ),
        -- A record net of its corrections (a correction repeats its original's keys).
        net AS (
            SELECT u.host_id, u.licensor_id, u.license_id, u.model_id, u.customer_category,
                   u.region, u.currency, u.occurred_at,
                   (CASE WHEN u.corrects <> '' THEN u.corrects ELSE u.event_id END) COLLATE "C"
                       AS eid,
                   sum(u.input_tokens) AS it, sum(u.cached_input_tokens) AS ct,
                   sum(u.output_tokens) AS ot, sum(u.requests) AS rq, sum(u.revenue) AS rev,
                   count(*) FILTER (WHERE u.corrects = '') AS n
            FROM {month} u
            WHERE {where} AND u.license_id = ANY(%(tlicenses)s::bigint[])
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
        ),
        running AS (
            SELECT net.*, {bucket.replace("u.", "net.")} AS bucket,
                   coalesce(sum(net.rev) OVER w, 0) AS rev_before,
                   coalesce(sum(net.it + net.ct + net.ot) OVER w, 0) AS tok_before
            FROM net
            WINDOW w AS (PARTITION BY net.host_id, net.license_id ORDER BY net.occurred_at, net.eid
                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        ),
        sided AS (
            SELECT r.*, s.sides
            FROM running r
            LEFT JOIN ytd_all y ON y.host_id = r.host_id AND y.license_id = r.license_id
            CROSS JOIN LATERAL (
                SELECT coalesce(string_agg(
                    CASE WHEN b.before >= b.amount THEN 'a'
                         WHEN b.before + b.size > b.amount THEN 'c'
                         ELSE 'b' END, '' ORDER BY b.ord), '') AS sides
                FROM (
                    SELECT p.ord, p.amount,
                           CASE WHEN p.metric = 'revenue' THEN r.rev ELSE r.it + r.ct + r.ot END
                               AS size,
                           CASE WHEN p.metric = 'revenue' THEN r.rev_before ELSE r.tok_before END
                           + CASE WHEN p.win = 'calendar_year' THEN
                                 CASE WHEN p.metric = 'revenue' THEN coalesce(y.rev, 0)
                                      ELSE coalesce(y.tok, 0) END
                             ELSE 0 END AS before
                    FROM points p WHERE p.license_id = r.license_id
                ) AS b
            ) AS s
        ),
        """  # noqa: S608
        parts.append(
            """
            SELECT host_id, licensor_id, license_id, model_id, customer_category, region,
                   currency, bucket, sides,
                   CASE WHEN strpos(sides, 'c') > 0 THEN eid END AS single,
                   sum(it), sum(ct), sum(ot), sum(rq), sum(rev), sum(n),
                   min(rev_before), min(tok_before)
            FROM sided
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
            """
        )
    union = "\nUNION ALL\n".join(parts)
    if bounds:
        # Buckets of a month that terms split are merged per terms label.
        final = """
        SELECT l.host_id, l.licensor_id, l.license_id, m.slug, l.customer_category, l.region,
               l.currency, l.terms_kind, l.terms_id, l.terms_label,
               sum(l.it), sum(l.ct), sum(l.ot), sum(l.rq), sum(l.rev), sum(l.n),
               min(l.rev_before), min(l.tok_before),
               coalesce(max(y.rev), 0), coalesce(max(y.tok), 0)
        FROM labeled l
        JOIN licensing_model m ON m.id = l.model_id
        LEFT JOIN ytd_all y ON y.host_id = l.host_id AND y.license_id = l.license_id
        GROUP BY l.host_id, l.licensor_id, l.license_id, m.slug, l.customer_category, l.region,
                 l.currency, l.terms_kind, l.terms_id, l.terms_label, l.sides, l.single
        """
    else:
        # One bucket (no terms take effect inside the month): each group of `buckets` has one
        # terms label already, and a model one slug, so the merge above would be one row to one
        # row; without it, the month is hashed once, as the bare GROUP BY hashes it. (The
        # threshold and plain parts never share a key: their licenses are disjoint.)
        final = """
        SELECT l.host_id, l.licensor_id, l.license_id, m.slug, l.customer_category, l.region,
               l.currency, l.terms_kind, l.terms_id, l.terms_label,
               l.it, l.ct, l.ot, l.rq, l.rev, l.n::numeric,
               l.rev_before, l.tok_before, coalesce(y.rev, 0), coalesce(y.tok, 0)
        FROM labeled l
        JOIN licensing_model m ON m.id = l.model_id
        LEFT JOIN ytd_all y ON y.host_id = l.host_id AND y.license_id = l.license_id
        """
    sql = f"""
    WITH
    ytd_all AS (
        -- numeric before the addition: one record's three bigint counts can pass bigint.
        SELECT u.host_id, u.license_id, sum(u.revenue) AS rev,
               sum(u.input_tokens::numeric + u.cached_input_tokens + u.output_tokens) AS tok
        FROM usage_record u
        WHERE u.occurred_at >= %(year_start)s AND u.occurred_at < %(start)s
          AND u.license_id = ANY(%(ytd_licenses)s::bigint[])
          {"AND u.host_id = %(host_id)s" if f.host_id is not None else ""}
          {"AND NOT u.late" if not f.include_late else ""}
          {"AND u.received_at <= %(received_until)s" if f.received_until is not None else ""}
        GROUP BY 1, 2
    ),
    {ctes}
    buckets AS ({union}),
    in_force AS (
        SELECT (e->>'host_id')::bigint AS host_id, (e->>'license_id')::bigint AS license_id,
               (e->>'bucket')::int AS bucket, e->>'kind' AS kind, (e->>'id')::bigint AS id,
               e->>'label' AS label
        FROM jsonb_array_elements(%(in_force)s::jsonb) AS e
    ),
    -- The host's own entry (it has an agreement of the license) else the license's.
    labeled AS (
        SELECT g.*, coalesce(a.kind, v.kind) AS terms_kind, coalesce(a.id, v.id) AS terms_id,
               coalesce(a.label, v.label) AS terms_label
        FROM buckets g
        LEFT JOIN in_force a
          ON a.host_id = g.host_id AND a.license_id = g.license_id AND a.bucket = g.bucket
        LEFT JOIN in_force v
          ON v.host_id IS NULL AND v.license_id = g.license_id AND v.bucket = g.bucket
    )
    {final}
    """  # noqa: S608
    # The year to date matters to calendar-year thresholds only; other licenses skip that scan.
    params["ytd_licenses"] = sorted(
        license_id
        for license_id, points in thresholds.items()
        if any(p.window == "calendar_year" for p in points)
    )
    return sql, params


def _execute(sql: str, params: dict[str, Any]) -> Any:
    cursor = connection.cursor()
    # Never a server-side prepared statement: a generic plan of this query is slower (see above).
    raw = cursor.cursor  # Django's wrapper hides psycopg's `prepare` argument
    raw.execute(sql, params, prepare=False)
    return cursor


def aggregate_groups(period: str, f: UsageFilter) -> list[dict[str, Any]]:
    """The groups of `period` as dicts of `COLUMNS` (a pair's month is a few hundred rows)."""
    sql, params = groups_sql(period, f)
    cursor = _execute(sql, params)
    with cursor:
        return [dict(zip(COLUMNS, row, strict=True)) for row in cursor.fetchall()]


def stage_groups(*, run_id: int, period: str, received_until: datetime | None = None) -> int:
    """Aggregate the whole month into `billing_billingrungroup` rows of `run_id`, inside
    PostgreSQL; returns the number of groups.

    Through a temporary table: PostgreSQL never runs an `INSERT ... SELECT` in parallel, but
    does run `CREATE TABLE ... AS SELECT` in parallel, like the bare query; the groups (thousands
    of rows, not the month's records) are then copied in one statement."""
    # Its plan depends on the month's statistics (usage/partitions.py), which the run's start
    # brings up to date before its transaction (`billing_run_start`).
    sql, params = groups_sql(period, UsageFilter(received_until=received_until))
    columns = ", ".join(COLUMNS)
    with connection.cursor() as cursor:
        # For this transaction only: room for the groups' hash table (config/settings.py).
        cursor.execute(
            "SELECT set_config('work_mem', %s, true)", [settings.BILLING_AGGREGATION_WORK_MEM]
        )
    cursor = _execute(
        "CREATE TEMPORARY TABLE billing_stage ON COMMIT DROP AS "  # noqa: S608
        f"SELECT * FROM ({sql}) AS agg ({columns})",
        params,
    )
    with cursor:
        cursor.execute(
            f"INSERT INTO billing_billingrungroup (run_id, {columns}) "  # noqa: S608
            f"SELECT %s, {columns} FROM billing_stage",
            [run_id],
        )
        count = int(cursor.rowcount)
        cursor.execute("DROP TABLE billing_stage")
        return count


def late_usage_periods(
    *, before_period: str, host_id: int | None = None, licensor_id: int | None = None
) -> list[tuple[int, int, str]]:
    """(host_id, licensor_id, period) of settled months earlier than `before_period` that have
    late usage (the partial index billing_usage_late makes this a small lookup)."""
    start, _ = period_bounds(before_period)
    params: dict[str, Any] = {"start": start}
    pair = ""
    if host_id is not None and licensor_id is not None:
        pair = "AND licensor_id = %(licensor_id)s AND host_id = %(host_id)s"
        params.update(host_id=host_id, licensor_id=licensor_id)
    cursor = _execute(
        f"""
        SELECT DISTINCT host_id, licensor_id, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM')
        FROM usage_record WHERE late AND occurred_at < %(start)s {pair}
        """,  # noqa: S608
        params,
    )
    with cursor:
        return [(int(h), int(lic), str(p)) for h, lic, p in cursor.fetchall()]


def count_records(*, host_id: int, licensor_id: int, period: str) -> int:
    """Original records (corrections not counted) of a pair's month, late ones excluded."""
    start, end = period_bounds(period)
    cursor = _execute(
        """
        SELECT count(*) FROM usage_record
        WHERE host_id = %(h)s AND occurred_at >= %(s)s AND occurred_at < %(e)s
          AND licensor_id = %(l)s AND corrects = '' AND NOT late
        """,
        {"h": host_id, "l": licensor_id, "s": start, "e": end},
    )
    with cursor:
        return int(cursor.fetchone()[0])
