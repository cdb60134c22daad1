"""Exactly once under concurrency and failure, over real HTTP where it matters."""

from __future__ import annotations

import random
import threading
from typing import Any

import httpx
import pytest
from django.db import connection
from django.db.models import Count, Sum

from licensing.services import api_key_create
from tests.usage.conftest import record
from usage.models import UsageKey, UsageRecord
from usage.services import usage_batch_ingest


def _batches() -> list[list[dict[str, Any]]]:
    """20 batches of 150 records; each also repeats 30 records of its neighbour, so batches
    overlap and concurrent sends race for the same event_ids."""
    own = [
        [
            record(f"b{b:02d}-{i:03d}", input_tokens=b * 1000 + i, revenue=f"{i}.000001")
            for i in range(150)
        ]
        for b in range(20)
    ]
    return [own[b] + own[(b + 1) % 20][:30] for b in range(20)]


@pytest.mark.django_db(transaction=True)
def test_it_stores_8_concurrent_shuffled_replays_exactly_once(
    catalog: Any, host: Any, live_server: Any
) -> None:
    # given 20 overlapping batches and their totals when sent once
    batches = _batches()
    unique = {r["event_id"]: r for batch in batches for r in batch}
    expected_tokens = sum(r["input_tokens"] for r in unique.values())
    key = api_key_create(host=host).key
    failures: list[Any] = []

    def client(seed: int) -> None:
        order = list(range(20))
        random.Random(seed).shuffle(order)
        with httpx.Client(base_url=live_server.url, timeout=60) as http:
            for b in order:
                response = http.post(
                    "/api/v1/usage",
                    json={"records": batches[b]},
                    headers={"Authorization": f"Bearer {key}"},
                )
                body = response.json()
                if response.status_code != 200 or body["rejected"]:
                    failures.append(body)

    # when 8 clients replay all batches, each in its own shuffled order, at the same time
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then nothing was refused, every event_id is stored once, and the totals equal one send
    assert failures == []
    totals = UsageRecord.objects.aggregate(n=Count("id"), tokens=Sum("input_tokens"))
    assert totals == {"n": len(unique), "tokens": expected_tokens}
    assert UsageKey.objects.count() == len(unique)


FAIL_AT_COMMIT = """
CREATE FUNCTION usage_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'injected failure at commit'; END $$;
CREATE CONSTRAINT TRIGGER usage_test_fail AFTER INSERT ON usage_record
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION usage_test_fail();
"""


@pytest.mark.django_db(transaction=True)
def test_it_leaves_nothing_after_a_failure_before_commit_and_the_retry_stores_once(
    catalog: Any, host: Any
) -> None:
    # given a failure injected by the database itself after the insert, at COMMIT
    records = [record(f"f-{i}") for i in range(50)] + [record("f-0")]
    with connection.cursor() as cursor:
        cursor.execute(FAIL_AT_COMMIT)
    try:
        # when a batch is ingested
        with pytest.raises(Exception, match="injected failure"):
            usage_batch_ingest(host=host, records=records)

        # then neither a record nor a claim is left
        assert UsageRecord.objects.count() == 0
        assert UsageKey.objects.count() == 0
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER usage_test_fail ON usage_record")
            cursor.execute("DROP FUNCTION usage_test_fail()")

    # when the host retries the same batch
    result = usage_batch_ingest(host=host, records=records)

    # then every record is stored once (the in-batch copy is a duplicate)
    assert (result.accepted, result.duplicates) == (50, 1)
    assert UsageRecord.objects.count() == 50
