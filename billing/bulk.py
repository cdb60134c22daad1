"""Writes of many rows in few round trips, for a billing run's batches (billing/settling.py):
Django's bulk_create and bulk_update spend more time compiling SQL than PostgreSQL spends
running it (~100 µs a row), so a batch's rows go through COPY, one UPDATE ... FROM unnest, and
one lookup of a set of (host, licensor) pairs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
from django.db import connection, models
from django.db.models.fields import NOT_PROVIDED

from billing.models import Settlement


class NewRows:
    """New rows of `model` as the column values COPY writes (`values_copy`), with the model's
    defaults filled in as `Model(**values)` and `save()` would (a callable default called per
    row, auto_now fields the given instant): `bulk_create` without an instance per row. A
    settlement built as a model cost ~70 µs (Django's keyword `__init__`, a `get_default` per
    field left out) and its COPY row as much again: at 10,000 pairs, ~1.4 s of a first run
    whose every other per-pair cost is a fraction of that. The key is the caller's or a default
    (a UUID); keys the database generates and fields with a `db_default` are left to the
    database, and `instance` gives them the values the database gives (`db_default`)."""

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model
        fields = [
            f for f in model._meta.local_concrete_fields if not getattr(f, "db_returning", False)
        ]
        self.columns = tuple(f.attname for f in fields)
        # How each column is filled when the caller leaves it out: (attname, auto_now, the
        # callable default to call per row or None, else the constant default).
        self._plan = [
            (
                f.attname,
                bool(getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)),
                f.default if f.has_default() and callable(f.default) else None,
                None if f.has_default() and callable(f.default) else f.get_default(),
            )
            for f in fields
        ]
        self._db_defaults = {
            f.attname: f.db_default
            for f in model._meta.local_concrete_fields
            if getattr(f, "db_returning", False) and f.db_default is not NOT_PROVIDED
        }

    def row(self, now: datetime, values: dict[str, Any]) -> tuple[Any, ...]:
        """The values of one new row, in `columns` order: auto_now and auto_now_add fields
        `now` (as `save()` sets them, whatever is given), the others `values` (by attname),
        else the field's default."""
        out: list[Any] = []
        for name, auto, make, constant in self._plan:
            if auto:
                out.append(now)
            elif name in values:
                out.append(values[name])
            elif make is not None:
                out.append(make())
            else:
                out.append(constant)
        return tuple(out)

    def instance(self, row: Sequence[Any]) -> models.Model:
        """The model instance of a row written by `values_copy` (as saved: not `adding`)."""
        values = dict(zip(self.columns, row, strict=True))
        for name, default in self._db_defaults.items():
            values[name] = getattr(default, "value", default)
        obj = self.model(**values)
        obj._state.adding = False
        obj._state.db = connection.alias
        return obj


def values_copy(
    model: type[models.Model], columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """INSERT `rows` (values of the fields whose attnames are `columns`, in that order) with
    `COPY ... FROM STDIN`, in the current transaction: rows whose defaults the caller fills in
    (`NewRows`), tens of thousands of them in a run's batch."""
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    fields = [by_attname[name] for name in columns]
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    # JSON as its text, dumped as JSONField does (json.dumps with the field's encoder; None is
    # SQL NULL), without the adapter object Django wraps each value in (~15 µs a value).
    json_at = [
        (i, partial(json.dumps, cls=f.encoder))
        for i, f in enumerate(fields)
        if isinstance(f, models.JSONField)
    ]
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            write_row = copy.write_row
            if not json_at:
                for row in rows:
                    write_row(row)
                return
            for row in rows:
                row = list(row)
                for i, dumps in json_at:
                    if row[i] is not None:
                        row[i] = dumps(row[i])
                write_row(row)


def pairs_lookup(
    model: type[models.Model],
    columns: Sequence[str],
    scope: str,
    *,
    lock: bool = False,
    binary: bool = False,
) -> str:
    """A statement that reads `columns` (attnames that are also column names) of `model`'s rows
    of a set of (host_id, licensor_id) pairs within `scope` (SQL on the alias `t`: the run, or
    the period and status), in key order; `lock`: each row FOR UPDATE. Its parameters: the
    pairs' host ids, their licensor ids (two lists, no pair twice: `pairs_params`), then
    `scope`'s. `binary`: the two lists bound as `%b`, for psycopg's own cursor (Django's binds
    client-side, with `%s` only).

    Each pair's rows are found by an index lookup of their own (a LATERAL subquery, which
    OFFSET 0 or the lock keeps the planner from flattening), so what a batch reads does not
    grow with its run. `(host_id, licensor_id) IN (SELECT * FROM unnest ...)` let the planner
    hash every row of the run or the period for each batch (at 10,000 pairs, 20 batches each
    reading 10,000 pair rows and 10,000 settlements), and `id IN (<the lookups>)` let it run
    the lookups again for every row of the period; the run's rows are newer than the table's
    statistics mid-run (the planner expected one row of each), so only the statement's shape
    makes the plan. A locked row is checked against `scope` again once its lock is granted,
    as in any `SELECT ... FOR UPDATE` (a settlement superseded meanwhile is not read)."""
    table = connection.ops.quote_name(model._meta.db_table)
    key = model._meta.pk.column
    outer = ", ".join(f"x.{c}" for c in columns)
    # The key too, whether or not it is read: the rows come out in its order.
    inner = ", ".join(f"t.{c}" for c in dict.fromkeys([*columns, key]))
    arrays = "%b::bigint[], %b::bigint[]" if binary else "%s::bigint[], %s::bigint[]"
    # S608: the only interpolations are the model's own table and column names and the
    # caller's constant scope; the values are bound.
    return (
        f"SELECT {outer} FROM unnest({arrays})"  # noqa: S608
        " AS p(host_id, licensor_id) CROSS JOIN LATERAL"
        f" (SELECT {inner} FROM {table} t WHERE t.host_id = p.host_id"
        f" AND t.licensor_id = p.licensor_id AND {scope} OFFSET 0"
        f"{' FOR UPDATE' if lock else ''}) x ORDER BY x.{key}"
    )


def pairs_params(pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """`pairs_lookup`'s first two parameters: the host ids and the licensor ids, no pair twice,
    in (host, licensor) order: the order the lookups run in, so the order a locking lookup locks
    in, whatever order the caller's pairs come in (two batches sharing pairs never deadlock)."""
    unique = sorted(set(pairs))
    return [[h for h, _ in unique], [lic for _, lic in unique]]


def ids_update(model: type[models.Model], ids: Sequence[int], **values: Any) -> int:
    """`UPDATE ... SET <values> WHERE <integer key> = ANY(<ids>)`, the ids bound server-side as
    one binary array: `filter(pk__in=...)` quotes each of a batch's hundreds of ids into the SQL
    text (~0.5 ms per 100), and `%b` sends them in binary rather than as text psycopg quotes
    element by element. `values` are the columns of plain fields. Returns the rows updated."""
    if not ids:
        return 0
    by_name = {f.name: f for f in model._meta.concrete_fields}
    sets = ", ".join(f"{connection.ops.quote_name(by_name[name].column)} = %s" for name in values)
    table = connection.ops.quote_name(model._meta.db_table)
    key = connection.ops.quote_name(model._meta.pk.column)
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f"UPDATE {table} SET {sets} WHERE {key} = ANY(%b::bigint[])",  # noqa: S608 - names
            [*values.values(), list(ids)],
        )
        return cursor.rowcount


def settlements_recompute(settlements: Sequence[Settlement]) -> None:
    """Write the recomputed fields of draft `settlements` in one UPDATE (their rows are held
    FOR UPDATE by the caller)."""
    if not settlements:
        return
    # Bound server-side (psycopg's plain Cursor, on Django's connection and transaction).
    # Django's client-side binding would quote ~5,000 values a batch into the SQL text, which
    # cost as much as the UPDATE itself.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(*recompute_statement(settlements))
        assert cursor.rowcount == len(settlements)  # noqa: S101 - rows held FOR UPDATE


def recompute_statement(settlements: Sequence[Settlement]) -> tuple[str, list[Any]]:
    """`settlements_recompute`'s UPDATE and its parameters: the new values as arrays (`%b`, in
    binary: with `%s` psycopg dumps uuid, text and timestamp arrays as text, quoting each element
    in Python, 2,000 timestamps ~6 ms against ~0.6 ms; numeric stays `%s`, binary is no faster).

    The rows are found by their keys (`s.id = ANY(...)`, an index lookup each): joined to the
    arrays alone, the planner hashed every settlement of every period for each batch, a scan
    that grows with the table's history (tests/billing/test_run_reads.py)."""
    columns: dict[str, list[Any]] = {
        "id": [s.pk for s in settlements],
        "total": [s.total for s in settlements],
        "usage_digest": [s.usage_digest for s in settlements],
        "terms_digest": [s.terms_digest for s in settlements],
        "lines_digest": [s.lines_digest for s in settlements],
        "record_count": [s.record_count for s in settlements],
        "flags": [json.dumps(s.flags) for s in settlements],
        "computed_at": [s.computed_at for s in settlements],
        "run_id": [s.run_id for s in settlements],
        "review_due_at": [s.review_due_at for s in settlements],
        "updated_at": [s.updated_at for s in settlements],
    }
    sql = """
        UPDATE billing_settlement s
        SET total = v.total, usage_digest = v.usage_digest, terms_digest = v.terms_digest,
            lines_digest = v.lines_digest,
            record_count = v.record_count, flags = v.flags::jsonb,
            computed_at = v.computed_at, run_id = v.run_id,
            review_due_at = v.review_due_at, updated_at = v.updated_at
        FROM unnest(%b::uuid[], %s::numeric[], %b::text[], %b::text[], %b::text[],
                    %b::bigint[],
                    %b::text[], %b::timestamptz[], %b::bigint[], %b::timestamptz[],
                    %b::timestamptz[])
             AS v(id, total, usage_digest, terms_digest, lines_digest, record_count, flags,
                  computed_at,
                  run_id, review_due_at, updated_at)
        WHERE s.id = ANY(%b::uuid[]) AND s.id = v.id
    """
    return sql, [*columns.values(), columns["id"]]


__all__ = [
    "NewRows",
    "ids_update",
    "pairs_lookup",
    "pairs_params",
    "recompute_statement",
    "settlements_recompute",
    "values_copy",
]
