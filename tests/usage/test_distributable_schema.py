"""The usage schema stays distributable by host (docs/scaling.md): on Citus, a distributed
table's primary keys, unique constraints and unique indexes must include the distribution column,
`host_id`. This reads them all from the catalog, partitions included, so a new usage table or
index that breaks the rule fails here, not on the day of the migration to Citus."""

from __future__ import annotations

import pytest
from django.db import connection

# Every unique index (a primary key's and a unique constraint's included) on a table of ours
# whose name starts with usage_, with its column names (NULL for an expression).
UNIQUE_INDEXES = r"""
SELECT t.relname, i.relname, array_agg(a.attname ORDER BY k.ord)
FROM pg_index x
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
WHERE x.indisunique AND n.nspname = current_schema() AND t.relname LIKE 'usage\_%'
GROUP BY t.relname, i.relname
ORDER BY t.relname, i.relname
"""

UNIQUE_CONSTRAINTS = r"""
SELECT t.relname, c.conname, c.contype,
       array(SELECT a.attname FROM unnest(c.conkey) AS k(attnum)
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum)
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE c.contype IN ('p', 'u', 'x') AND n.nspname = current_schema()
  AND t.relname LIKE 'usage\_%'
ORDER BY t.relname, c.conname
"""


# Usage tables that hold no host's rows: on Citus they are reference tables (a copy on every
# node), like the licensing tables, so the rule does not apply to them (docs/scaling.md).
REFERENCE_TABLES = {"usage_periodcomplete"}  # one row per completed month


@pytest.mark.django_db
def test_every_unique_index_of_every_usage_table_includes_host_id() -> None:
    with connection.cursor() as cursor:
        cursor.execute(UNIQUE_INDEXES)
        indexes = cursor.fetchall()

    tables = {table for table, _, _ in indexes}
    assert {"usage_record", "usage_key", "usage_periodclose"} <= tables
    assert any(t.startswith("usage_record_p") for t in tables), "no partition was checked"
    missing = [
        (t, name, cols)
        for t, name, cols in indexes
        if "host_id" not in cols and t not in REFERENCE_TABLES
    ]
    assert missing == []


@pytest.mark.django_db
def test_every_primary_key_and_unique_constraint_of_every_usage_table_includes_host_id() -> None:
    with connection.cursor() as cursor:
        cursor.execute(UNIQUE_CONSTRAINTS)
        constraints = cursor.fetchall()

    assert {("usage_record", "p"), ("usage_key", "p"), ("usage_periodclose", "u")} <= {
        (t, kind) for t, _, kind, _ in constraints
    }
    missing = [
        (t, name, cols)
        for t, name, _, cols in constraints
        if "host_id" not in cols and t not in REFERENCE_TABLES
    ]
    assert missing == []
