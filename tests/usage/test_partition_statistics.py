"""Every usage partition carries the extended statistics a month's aggregation needs to be hashed
(usage/partitions.py; docs/performance.md, "Billing"): created with each partition, and by
migration 0005 for the parent and the partitions that existed before it."""

from __future__ import annotations

import pytest
from django.db import connection

from usage import partitions


def _statistics() -> dict[str, tuple[set[str], set[str]]]:
    """Table -> (kinds, columns) of its `*_model_stats` statistics object."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, s.stxkind::text[],
                   ARRAY(SELECT a.attname::text FROM pg_attribute a
                         WHERE a.attrelid = s.stxrelid AND a.attnum = ANY(s.stxkeys))
            FROM pg_statistic_ext s JOIN pg_class c ON c.oid = s.stxrelid
            WHERE s.stxname = c.relname || '_model_stats'
            """
        )
        return {name: (set(kinds), set(columns)) for name, kinds, columns in cursor.fetchall()}


def _partitions() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'usage_record'::regclass"
        )
        return {row[0] for row in cursor.fetchall()}


EXPECTED = ({"d", "f"}, set(partitions.STATISTICS_COLUMNS))


@pytest.mark.django_db
def test_the_parent_and_every_migrated_partition_have_the_statistics() -> None:
    # given the migrated database (its partitions: the months around today)
    tables = _partitions()
    assert tables

    # when its statistics objects are listed
    found = _statistics()

    # then the parent and each partition have ndistinct and dependencies on the three columns
    for table in ["usage_record", *sorted(tables)]:
        assert found.get(table) == EXPECTED, table


@pytest.mark.django_db(transaction=True)
def test_a_partition_created_on_demand_has_the_statistics() -> None:
    # given a month inside the window without a partition
    name = partitions.partition_name(2021, 8)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")
    partitions.partitions_forget()

    # when the ingest path creates it
    created = partitions.partitions_ensure([(2021, 8)])

    # then it exists with its statistics object
    assert created == [name]
    assert _statistics().get(name) == EXPECTED
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {name}")
    partitions.partitions_forget()


@pytest.mark.django_db
def test_a_month_is_read_from_its_partition_when_it_exists() -> None:
    # given a month with a partition and one without (outside any migration's months)
    name = partitions.partition_name(2021, 9)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")

    # when / then the aggregation reads the partition, else the parent
    assert partitions.month_relation(2021, 9) == "usage_record"
    partitions.partitions_ensure([(2021, 9)])
    assert partitions.month_relation(2021, 9) == name
