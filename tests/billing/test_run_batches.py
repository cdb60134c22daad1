"""Pairs settled in batches (docs/billing.md, "Batches"): one transaction writes many pairs'
settlements, and each pair's result stays what it would be alone: a pair that raises is
recorded failed while the rest of its batch is settled, and a batch run again writes nothing
twice."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from billing.models import BillingRun, BillingRunPair, Settlement, SettlementEvent, SettlementLine
from billing.runs import billing_pairs_bill, billing_pairs_settle, billing_run_start
from licensing.catalog import catalog_import
from licensing.models import Host
from tests.billing.conftest import minimax_catalog, post_usage, record
from tests.billing.test_run_failures import BIGINT_MAX, insert_like, per_token_catalog

HOSTS = ("h-1", "h-2", "h-3")


@pytest.fixture
def three_hosts(db: None, client_for: Callable[..., APIClient]) -> dict[str, APIClient]:
    catalog_import(minimax_catalog(hosts=HOSTS))
    clients = {slug: client_for(host=Host.objects.get(slug=slug)) for slug in HOSTS}
    for i, slug in enumerate(HOSTS, start=1):
        post_usage(clients[slug], [record(f"{slug}-1", revenue=f"{100 * i}.00")])
    return clients


def _pairs(run: BillingRun) -> list[tuple[int, int]]:
    return list(
        BillingRunPair.objects.filter(run=run).order_by("id").values_list("host_id", "licensor_id")
    )


def _books() -> dict[str, Any]:
    """Everything a run writes, to compare before and after."""
    return {
        "settlements": sorted(
            Settlement.objects.values_list("pk", "total", "usage_digest", "updated_at")
        ),
        "lines": sorted(SettlementLine.objects.values_list("settlement_id", "position", "amount")),
        "events": sorted(SettlementEvent.objects.values_list("settlement_id", "action")),
    }


def test_a_batch_with_a_failing_pair_settles_the_others(
    three_hosts: dict[str, APIClient],
) -> None:
    # given: 3 minimax pairs and a TokenCo pair of h-2 whose amount no settlement can hold, all
    # four in one batch
    catalog_import(per_token_catalog("10000000"))
    post_usage(three_hosts["h-2"], [record("h2-t", model="token-1")])
    insert_like("h2-huge-1", like="h2-t", category="commercial", input_tokens=BIGINT_MAX)
    insert_like("h2-huge-2", like="h2-t", category="commercial", input_tokens=BIGINT_MAX)
    run = billing_run_start(period="2026-10", trigger="command")
    pairs = _pairs(run)
    assert len(pairs) == 4

    # when
    failed = billing_pairs_bill(run_id=run.pk, pairs=pairs)

    # then: the failing pair is recorded, the three others are settled once each
    assert failed == 1
    run.refresh_from_db()
    assert (run.status, run.pairs_done, run.pairs_failed, run.settlements_written) == (
        "partial",
        4,
        1,
        3,
    )
    totals = sorted(
        Settlement.objects.filter(period="2026-10").values_list(
            "licensor__slug", "host__slug", "total"
        )
    )
    assert [(lic, host, str(t)) for lic, host, t in totals] == [
        ("minimax", "h-1", "12.0000"),
        ("minimax", "h-2", "24.0000"),
        ("minimax", "h-3", "36.0000"),
    ]
    bad = BillingRunPair.objects.get(run=run, licensor__slug="tokenco")
    assert bad.error.startswith("DataError: numeric field overflow")
    assert SettlementEvent.objects.filter(action="computed").count() == 3


def test_a_batch_run_again_writes_nothing_twice(three_hosts: dict[str, APIClient]) -> None:
    # given: a run whose first two pairs were settled as one batch
    run = billing_run_start(period="2026-10", trigger="command")
    pairs = _pairs(run)
    first = billing_pairs_settle(run_id=run.pk, pairs=pairs[:2])
    assert [len(o.written) for o in first.values()] == [1, 1]
    before = _books()

    # when: the same batch again (a redelivered task), then a batch overlapping it
    again = billing_pairs_settle(run_id=run.pk, pairs=pairs[:2])
    after_again = _books()
    overlapping = billing_pairs_settle(run_id=run.pk, pairs=pairs[1:])

    # then: the repeat skipped both pairs and changed nothing; the overlap wrote the third only
    assert all(o.skipped for o in again.values())
    assert after_again == before
    assert overlapping[pairs[1]].skipped
    assert len(overlapping[pairs[2]].written) == 1
    run.refresh_from_db()
    assert (run.status, run.pairs_done, run.settlements_written) == ("done", 3, 3)
    assert Settlement.objects.count() == 3
    assert SettlementEvent.objects.filter(action="computed").count() == 3
    assert SettlementLine.objects.count() == sum(
        len(s.lines.all()) for s in Settlement.objects.all()
    )


def test_a_re_run_recomputes_a_batch_of_drafts_in_place(three_hosts: dict[str, APIClient]) -> None:
    # given: the month billed once, in one batch; then one more record for h-3
    run = billing_run_start(period="2026-10", trigger="command")
    billing_pairs_bill(run_id=run.pk, pairs=_pairs(run))
    ids = dict(Settlement.objects.values_list("host__slug", "pk"))
    post_usage(three_hosts["h-3"], [record("h-3-2", revenue="50.00")])

    # when: the month run again, its three pairs one batch
    rerun = billing_run_start(period="2026-10", trigger="command")
    with CaptureQueriesContext(connection) as queries:
        billing_pairs_bill(run_id=rerun.pk, pairs=_pairs(rerun))

    # then: the batch locked and read its drafts once, with the columns it needed, and loaded
    # no settlement again a column at a time (a deferred field read on its own, one query each)
    sql = [q["sql"] for q in queries.captured_queries]
    locked = [q for q in sql if 'FROM "billing_settlement"' in q and "FOR UPDATE" in q]
    assert len(locked) == 1, locked
    one_column = re.compile(
        r'SELECT "billing_settlement"\."id", "billing_settlement"\."\w+" FROM "billing_settlement"'
        r' WHERE "billing_settlement"\."id" = '
    )
    assert not [q for q in sql if one_column.match(q)]
    # and the same drafts (same ids), h-3's recomputed, and a history event for it only
    assert dict(Settlement.objects.values_list("host__slug", "pk")) == ids
    totals = dict(Settlement.objects.values_list("host__slug", "total"))
    assert [str(totals[h]) for h in HOSTS] == ["12.0000", "24.0000", "42.0000"]
    recomputed = SettlementEvent.objects.filter(action="recomputed")
    assert [e.settlement.host.slug for e in recomputed] == ["h-3"]
    assert SettlementLine.objects.filter(settlement_id=ids["h-3"]).count() == 1


def _line_ids() -> dict[str, set[int]]:
    ids: dict[str, set[int]] = {}
    for host, pk in SettlementLine.objects.values_list("settlement__host__slug", "pk"):
        ids.setdefault(host, set()).add(pk)
    return ids


def test_a_re_run_leaves_the_lines_that_came_out_the_same(
    three_hosts: dict[str, APIClient],
) -> None:
    # given: the month billed once; then one more record for h-3, and h-2's lines digest lost
    # (as for a draft written before the digest existed)
    run = billing_run_start(period="2026-10", trigger="command")
    billing_pairs_bill(run_id=run.pk, pairs=_pairs(run))
    before = _line_ids()
    post_usage(three_hosts["h-3"], [record("h-3-2", revenue="50.00")])
    Settlement.objects.filter(host__slug="h-2").update(lines_digest="")

    # when: the month run again
    rerun = billing_run_start(period="2026-10", trigger="command")
    billing_pairs_bill(run_id=rerun.pk, pairs=_pairs(rerun))

    # then: h-1's lines are the same rows; h-3's (new usage) and h-2's (no digest to compare)
    # are written again; every draft now belongs to the re-run, with its lines' digest
    after = _line_ids()
    assert after["h-1"] == before["h-1"]
    assert after["h-2"].isdisjoint(before["h-2"])
    assert after["h-3"].isdisjoint(before["h-3"])
    assert set(Settlement.objects.values_list("run_id", flat=True)) == {rerun.pk}
    digests = dict(Settlement.objects.values_list("host__slug", "lines_digest"))
    assert all(d.startswith("blake2b:") for d in digests.values())
    amounts = sorted(SettlementLine.objects.values_list("settlement__host__slug", "amount"))
    assert [(h, str(a)) for h, a in amounts] == [
        ("h-1", "12.0000"),
        ("h-2", "24.0000"),
        ("h-3", "42.0000"),
    ]
