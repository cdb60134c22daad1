"""Writes of many rows in few round trips, for a billing run's batches (billing/settling.py):
Django's bulk_create and bulk_update spend more time compiling SQL than PostgreSQL spends
running it (~100 µs a row), so a batch's rows go through COPY, one UPDATE ... FROM unnest, and
one lookup of a set of (host, licensor) pairs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from django.db import connection, models

from billing.models import Settlement


def rows_copy(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """INSERT `objs` with `COPY ... FROM STDIN`, in the current transaction; what bulk_create
    would write (auto_now fields filled, database-generated keys left to the database and not
    read back: the callers never need them)."""
    if not objs:
        return
    # Not the keys the database generates (AutoField: `db_returning`); a UUID key is ours.
    fields = [f for f in model._meta.local_concrete_fields if not getattr(f, "db_returning", False)]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    # Values as psycopg adapts them (Decimal, datetime, UUID, str, int): only JSON needs a
    # wrapper, and only auto_now fields their pre_save; get_db_prep_save for every field of
    # every row cost ~10 us each.
    auto = [f for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    for obj in objs:
        for f in auto:
            f.pre_save(obj, add=True)
    getters = [(f.attname, isinstance(f, models.JSONField), f.get_db_prep_save) for f in fields]
    table = connection.ops.quote_name(model._meta.db_table)
    # Django's exceptions (DataError, OperationalError), as from any other query: the callers
    # and the Celery tasks tell a bad row from a lost connection by them.
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for obj in objs:
                row = obj.__dict__
                copy.write_row(
                    [
                        prep(row[name], connection) if is_json else row[name]
                        for name, is_json, prep in getters
                    ]
                )
    for obj in objs:  # saved, as after bulk_create: later saves UPDATE them, not INSERT
        obj._state.adding = False
        obj._state.db = connection.alias


def values_copy(
    model: type[models.Model], columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """INSERT `rows` (values of the fields whose attnames are `columns`, in that order) with
    `COPY ... FROM STDIN`, in the current transaction: `rows_copy` without a model instance per
    row, for writes of tens of thousands of rows whose defaults the caller fills in."""
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    fields = [by_attname[name] for name in columns]
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    json_at = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                if json_at:
                    row = list(row)
                    for i in json_at:
                        row[i] = fields[i].get_db_prep_save(row[i], connection)
                copy.write_row(row)


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
    "ids_update",
    "pairs_lookup",
    "pairs_params",
    "recompute_statement",
    "rows_copy",
    "settlements_recompute",
    "values_copy",
]
