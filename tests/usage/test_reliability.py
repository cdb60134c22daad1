"""Exactly once under concurrency and failure, over real HTTP where it matters."""

from __future__ import annotations

import random
import threading
from typing import Any

import httpx
import orjson
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
    # Every answer, kept as raw (status, body bytes) per client and nothing parsed in the threads:
    # an exception in a thread only warns, so a thread must not be where a failure is noticed.
    answers: dict[int, list[tuple[int, bytes]]] = {seed: [] for seed in range(8)}
    errors: dict[int, BaseException] = {}

    def client(seed: int) -> None:
        order = list(range(20))
        random.Random(seed).shuffle(order)
        try:
            with httpx.Client(base_url=live_server.url, timeout=60) as http:
                for b in order:
                    response = http.post(
                        "/api/v1/usage",
                        json={"records": batches[b]},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    answers[seed].append((response.status_code, response.content))
        except BaseException as exc:
            errors[seed] = exc

    # when 8 clients replay all batches, each in its own shuffled order, at the same time
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then every client got 20 answers, each a 200 with nothing rejected and every record either
    # accepted or a duplicate
    assert errors == {}
    assert {seed: len(a) for seed, a in answers.items()} == {seed: 20 for seed in range(8)}
    statuses = {status for a in answers.values() for status, _ in a}
    assert statuses == {200}, [body[:300] for a in answers.values() for s, body in a if s != 200]
    bodies = [orjson.loads(body) for a in answers.values() for _, body in a]
    assert [(b["accepted"] + b["duplicates"], b["rejected"]) for b in bodies] == [(180, 0)] * 160
    # and each event_id was accepted by exactly one answer of all 160
    assert sum(b["accepted"] for b in bodies) == len(unique)
    # and every event_id is stored once, and the totals equal one send
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
