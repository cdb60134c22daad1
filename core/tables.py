"""Statistics the planner needs, kept fresh where a plan depends on them.

Autovacuum may be off (this project's CI server runs without it) or may not have come round yet:
a table it never analyzed has no statistics at all, and PostgreSQL then guesses one row for
every condition and picks among indexes that look alike by their size. The billing run analyzes
the tables its plans depend on before it reads them (usage/partitions.py, billing/runs.py).
"""

from __future__ import annotations

from django.db import connection

__all__ = ["STALE_SHARE", "table_analyze_if_stale"]

# Re-analyze once this share of a table's rows changed since its last ANALYZE (autovacuum's
# default analyze scale factor).
STALE_SHARE = 0.1


def table_analyze_if_stale(name: str) -> bool:
    """ANALYZE the table `name` when it never was, or when more than STALE_SHARE of its rows
    changed since. Samples a bounded number of rows whatever the table's size (a few hundred ms
    on 10M rows). Returns whether it analyzed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.last_analyze IS NULL AND s.last_autoanalyze IS NULL,"
            " s.n_mod_since_analyze, c.reltuples"
            " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
            " WHERE s.relname = %s",
            [name],
        )
        row = cursor.fetchone()
        if row is None:
            return False
        never, changed, tuples = row
        if not never and changed <= STALE_SHARE * max(float(tuples), 0.0):
            return False
        cursor.execute(f"ANALYZE {connection.ops.quote_name(name)}")
    return True
