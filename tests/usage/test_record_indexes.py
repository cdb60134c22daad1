"""The indexes written with every accepted record (migration 0007): one b-tree by host and time
(the primary key), and a BRIN on id for the reads by id alone; no two indexes of the same
columns, on the parent or on any partition."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from tests.usage.conftest import record
from usage.models import UsageRecord

# Every index of usage_record and of its partitions: table, access method, unique, partial,
# columns in order.
INDEXES = r"""
SELECT t.relname, am.amname, x.indisunique, x.indpred IS NOT NULL,
       array_agg(a.attname::text ORDER BY k.ord)
FROM pg_index x
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_am am ON am.oid = i.relam
CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
WHERE t.oid = 'usage_record'::regclass
   OR t.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'usage_record'::regclass)
GROUP BY t.relname, i.relname, am.amname, x.indisunique, x.indpred
"""


def _indexes() -> dict[str, list[tuple[str, bool, bool, tuple[str, ...]]]]:
    with connection.cursor() as cursor:
        cursor.execute(INDEXES)
        rows = cursor.fetchall()
    by_table: dict[str, list[tuple[str, bool, bool, tuple[str, ...]]]] = {}
    for table, method, unique, partial, columns in rows:
        by_table.setdefault(table, []).append((method, unique, partial, tuple(columns)))
    return by_table


@pytest.mark.django_db
def test_a_record_writes_one_btree_by_host_and_time_and_a_brin_on_id(
    catalog: Any, post: Any
) -> None:
    post([record("indexed-1")])  # a partition of the record's month exists

    by_table = _indexes()

    assert any(t.startswith("usage_record_p") for t in by_table), "no partition was checked"
    for table, indexes in by_table.items():
        whole = sorted((m, u, cols) for m, u, partial, cols in indexes if not partial)
        # the primary key leads with host and time (every read of a host's records), and
        # nothing else is written with every record but a BRIN of id
        assert whole == [
            ("brin", False, ("id",)),
            ("btree", True, ("host_id", "occurred_at", "id")),
        ], table


@pytest.mark.django_db
def test_a_record_is_found_by_id_through_its_brin_index(catalog: Any, post: Any) -> None:
    # given a month of 20,000 records, its BRIN summarized (as VACUUM does) and analyzed
    for batch in range(2):
        response = post([record(f"by-id-{batch}-{n}") for n in range(10_000)])
        assert response.json()["accepted"] == 10_000
    wanted = UsageRecord.objects.get(event_id="by-id-1-777")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM usage_record WHERE id = %s", [wanted.pk]
        )
        (partition,) = cursor.fetchone()
        cursor.execute("SELECT brin_summarize_new_values(%s)", [f"{partition}_id_idx"])
        assert cursor.fetchone()[0] > 0
        cursor.execute(f"ANALYZE {partition}")

        # when a record is read by id alone, as the admin's page of one record reads it
        cursor.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT event_id FROM usage_record WHERE id = %s",
            [wanted.pk],
        )
        plan = cursor.fetchone()[0][0]["Plan"]
        cursor.execute("SELECT event_id FROM usage_record WHERE id = %s", [wanted.pk])
        found = cursor.fetchall()

    # then the BRIN index narrows it to a few pages of the partition, not the whole of it
    nodes = _nodes(plan)
    brin = [n for n in nodes if n.get("Index Name") == f"{partition}_id_idx"]
    assert brin, [n["Node Type"] for n in nodes]
    heap = next(n for n in nodes if n["Node Type"] == "Bitmap Heap Scan")
    # (a range is 128 pages, ~3,500 of these records; the id's band may straddle two)
    assert heap["Rows Removed by Index Recheck"] < 10_000
    assert found == [("by-id-1-777",)]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


@pytest.mark.django_db
def test_an_operator_opens_one_record_in_the_admin(catalog: Any, post: Any) -> None:
    post([record("admin-1"), record("admin-2")])
    User.objects.create_superuser("op", "op@example.com", "pw-for-tests")
    client = Client()
    client.login(username="op", password="pw-for-tests")
    row = UsageRecord.objects.get(event_id="admin-2")

    response = client.get(f"/admin/usage/usagerecord/{row.pk}/change/")

    assert response.status_code == 200
    assert "admin-2" in response.content.decode()
    assert "admin-1" not in response.content.decode()
