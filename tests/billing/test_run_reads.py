"""A batch reads its own pairs' rows, whatever the size of its run (docs/billing.md, "Batches"):
its reads of the run's pairs, of the run's groups and of the period's settlements look each of
its pairs up by index. Read as `IN (unnest ...)`, each batch scanned every row of the run (and of
the period), and a run's reads grew with the square of its pairs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from billing import aggregation
from billing.bulk import recompute_statement
from billing.models import BillingRunPair, Settlement
from billing.runs import billing_pairs_bill, billing_run_start
from billing.settling import groups_query
from core.tables import table_analyze_if_stale
from licensing.catalog import catalog_import
from licensing.models import Host
from tests.billing.conftest import minimax_catalog, post_usage, record
from usage.partitions import partition_name

HOSTS = tuple(f"h-{i:02}" for i in range(12))


@pytest.fixture
def twelve_pairs_billed(db: None, client_for: Callable[..., APIClient]) -> None:
    """Twelve hosts of one licensor, two groups each (commercial and individual), the month
    billed once: twelve pairs, twelve settlements."""
    catalog_import(minimax_catalog(hosts=HOSTS))
    for slug in HOSTS:
        post_usage(
            client_for(host=Host.objects.get(slug=slug)),
            [
                record(f"{slug}-1", revenue="10.00"),
                record(f"{slug}-2", revenue="5.00", category="individual"),
            ],
        )
    run = billing_run_start(period="2026-10", trigger="command")
    billing_pairs_bill(run_id=run.pk, pairs=_pairs(run.pk))
    # Statistics of the settlements as autovacuum keeps them: with none, the planner may find a
    # pair's settlements through (period, status) and read the period for each pair (the run
    # analyzes a table that never was: the last test). Other tests may have analyzed the
    # table already, with other rows.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE billing_settlement")


def _pairs(run_id: int) -> list[tuple[int, int]]:
    return list(
        BillingRunPair.objects.filter(run_id=run_id)
        .order_by("id")
        .values_list("host_id", "licensor_id")
    )


def _rows_read(sql: str, params: Any = None) -> Counter[str]:
    """Rows of each table the statement's scans went through as it ran (EXPLAIN ANALYZE): those
    they returned and those they read and dropped. Sequential scans are off: in a database this
    small one costs less than any lookup, and what is tested is the statement's shape."""
    raw = connection.connection  # psycopg's: `groups_query` binds with %b
    with raw.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        (text,) = cursor.fetchone()
        cursor.execute("SET LOCAL enable_seqscan = on")
    plan = json.loads(text) if isinstance(text, str) else text
    counts: Counter[str] = Counter()
    nodes = [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        if "Relation Name" in node:
            rows = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            counts[node["Relation Name"]] += rows * node["Actual Loops"]
    return counts


def test_a_batch_reads_its_own_pairs_rows_not_its_runs(twelve_pairs_billed: None) -> None:
    # given: the month run again (12 pairs, 24 groups, 12 drafts), and a batch of 2 of its pairs
    rerun = billing_run_start(period="2026-10", trigger="command")
    batch = _pairs(rerun.pk)[5:7]

    # when: the batch is billed
    with CaptureQueriesContext(connection) as queries:
        billing_pairs_bill(run_id=rerun.pk, pairs=batch)

    # then: its lock of the pair rows read 2 of the run's 12 (each found by index)
    locks = [q["sql"] for q in queries.captured_queries if "FOR UPDATE" in q["sql"]]
    (pairs_sql,) = [q for q in locks if 'FROM "billing_billingrunpair"' in q]
    assert _rows_read(pairs_sql)["billing_billingrunpair"] == 2
    # and its lock of the drafts read 2 of the period's 12
    (drafts_sql,) = [q for q in locks if 'FROM "billing_settlement"' in q]
    assert _rows_read(drafts_sql)["billing_settlement"] == 2
    # and its read of the groups read their 4 of the run's 24 (48 in the table, two runs')
    groups = _rows_read(*groups_query(run_id=rerun.pk, pairs=batch))
    assert groups["billing_billingrungroup"] == 2 * 2
    # and the batch was billed: its two pairs done, the other ten not
    done = BillingRunPair.objects.filter(run=rerun, done_at__isnull=False)
    assert sorted(done.values_list("host_id", "licensor_id")) == sorted(batch)


def test_a_batch_updates_its_drafts_by_key_not_by_scanning_the_table(
    twelve_pairs_billed: None,
) -> None:
    # given: the month's 12 drafts, 2 of which a batch recomputes
    drafts = list(Settlement.objects.filter(period="2026-10").order_by("host__slug"))
    assert len(drafts) == 12
    recomputed = drafts[5:7]

    # when: the batch's UPDATE of them runs
    read = _rows_read(*recompute_statement(recomputed))

    # then: it went through their 2 rows, each found by its key, not the table's 12
    assert read["billing_settlement"] == 2


def test_a_table_never_analyzed_is_analyzed_before_a_run_reads_it(db: None) -> None:
    # given: a table with rows that was never analyzed: no statistics, reltuples -1
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE never_analyzed AS SELECT g AS n FROM generate_series(1, 50) g")
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'never_analyzed'")
        assert cursor.fetchone() == (-1,)

    # when: the run's guard looks at it
    analyzed = table_analyze_if_stale("never_analyzed")

    # then: it analyzed it: the planner now counts its 50 rows
    assert analyzed is True
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'never_analyzed'")
        assert cursor.fetchone() == (50,)
    # and an unknown table is left alone
    assert table_analyze_if_stale("no_such_table") is False


@pytest.mark.django_db(transaction=True)
def test_the_run_start_commits_its_analyzes_before_its_transaction(
    minimax_world: tuple[Host, Any],
    client_for: Callable[..., APIClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: a month of usage in a partition never analyzed, so the run analyzes it
    post_usage(client_for(host=minimax_world[0]), [record("a-1", revenue="10.00")])
    partition = partition_name(2026, 10)
    # As if never analyzed (other tests may have, and a backend reports its row changes to the
    # statistics only every second or so): the run's guard analyzes such a table.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_reset_single_table_counters(%s::regclass)", [partition])
        cursor.execute(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relname = %s",
            [partition],
        )
        assert cursor.fetchone() == (None, None)
    # An ANALYZE holds a SHARE UPDATE EXCLUSIVE lock on its table until its transaction ends:
    # taken inside the run's transaction, it would keep every other ANALYZE (and VACUUM) of
    # the table waiting, and the new statistics hidden from other sessions, until the month's
    # aggregation commits. Seen from inside the aggregation:
    held: list[str] = []
    stage_groups = aggregation.stage_groups

    def observed(**kwargs: Any) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                " WHERE l.pid = pg_backend_pid() AND l.mode = 'ShareUpdateExclusiveLock'"
                " AND c.relname IN (%s, 'billing_settlement')",
                [partition],
            )
            held.extend(name for (name,) in cursor.fetchall())
        return stage_groups(**kwargs)

    monkeypatch.setattr(aggregation, "stage_groups", observed)

    # when
    with CaptureQueriesContext(connection) as queries:
        run = billing_run_start(period="2026-10", trigger="command")

    # then: it analyzed the partition, and by the aggregation that lock was gone: committed
    analyzes = [q["sql"] for q in queries if q["sql"].startswith("ANALYZE")]
    assert f'ANALYZE "{partition}"' in analyzes
    assert held == []
    assert run.groups_count == 1
