"""Back-dated usage cannot create partitions outside the window (docs/ingestion.md,
"Partitions"; docs/security.md finding 2): `occurred_at` before TOLLGATE_EARLIEST_PERIOD is
rejected by field name, and no partition is created for it."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from tests.usage.conftest import record
from usage import partitions
from usage.models import UsageRecord


def _partitions() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'usage_record'::regclass"
        )
        return {row[0] for row in cursor.fetchall()}


BACK_DATED = ["1900-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2019-12-31T23:59:59.999999Z"]


@pytest.mark.parametrize("ndjson", [False, True], ids=["json", "ndjson"])
@pytest.mark.parametrize("alone", [True, False], ids=["alone", "with-a-valid-one"])
def test_back_dated_usage_is_rejected_and_creates_no_partition(
    catalog: Any, post: Any, ndjson: bool, alone: bool
) -> None:
    # given the partitions that exist, and a batch of records before 2020-01 (the default
    # earliest month), alone (the fast path's shape) or next to a valid record
    before = _partitions()
    old = [record(f"old-{i}", occurred_at=at) for i, at in enumerate(BACK_DATED)]
    batch = old if alone else [record("ok"), *old]

    # when it is posted
    body = post(batch, ndjson=ndjson).json()

    # then each back-dated record is rejected naming occurred_at, and no partition appeared
    assert body["rejected"] == len(BACK_DATED), body
    for result in body["results"]:
        assert result["errors"]["occurred_at"][0].startswith("too_old: "), result
    assert body["accepted"] == (0 if alone else 1)
    assert _partitions() == before
    assert UsageRecord.objects.count() == body["accepted"]


def test_the_earliest_month_is_accepted(catalog: Any, post: Any) -> None:
    # given / when a record at the first instant of the earliest month
    body = post([record("first", occurred_at="2020-01-01T00:00:00Z")]).json()

    # then it is stored, in that month's partition
    assert body["accepted"] == 1, body
    assert "usage_record_p2020_01" in _partitions()


def test_the_earliest_month_is_configurable(catalog: Any, post: Any, settings: Any) -> None:
    # given an operator who accepts nothing before 2024-03
    settings.TOLLGATE_EARLIEST_PERIOD = "2024-03"

    # when records just before and at that month are posted
    body = post(
        [
            record("feb", occurred_at="2024-02-29T23:59:59+00:00"),
            record("mar", occurred_at="2024-03-01T00:00:00+00:00"),
        ]
    ).json()

    # then the February one is rejected, the March one stored
    assert (body["accepted"], body["rejected"]) == (1, 1), body
    assert body["results"][0]["event_id"] == "feb"
    assert "2024-03" in body["results"][0]["errors"]["occurred_at"][0]


def test_partitions_ensure_refuses_months_outside_the_window(db: None) -> None:
    # given the partitions that exist
    before = _partitions()

    # when a month before the window or far in the future is asked for
    # then it is refused, and nothing is created
    for month in [(1900, 1), (2019, 12), (9998, 12)]:
        with pytest.raises(ValueError, match="outside"):
            partitions.partitions_ensure([month])
    assert _partitions() == before
