"""Concurrent first batches of a month without a partition (docs/security.md, finding 11): every
client gets 200 and every record is stored once, whichever request creates the partition."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from django.db import connection

from licensing.services import api_key_create
from tests.usage.conftest import record
from usage import partitions
from usage.models import UsageRecord

# Months inside the window (after 2020-01) that no migration or beat task creates.
MONTHS = [(2021, m) for m in range(1, 7)]
CLIENTS = 6


@pytest.mark.django_db(transaction=True)
def test_parallel_first_batches_of_fresh_months_all_succeed(
    catalog: Any, host: Any, live_server: Any
) -> None:
    # given months without a partition (dropped if an earlier test made them) and a host key
    with connection.cursor() as cursor:
        for year, month in MONTHS:
            cursor.execute(f"DROP TABLE IF EXISTS {partitions.partition_name(year, month)}")
    partitions.partitions_forget()
    key = api_key_create(host=host).key
    answers: list[tuple[int, Any]] = []
    start = threading.Barrier(CLIENTS)

    def client(n: int) -> None:
        with httpx.Client(base_url=live_server.url, timeout=60) as http:
            for year, month in MONTHS:
                batch = [
                    record(
                        f"c{n}-{year}-{month}-{i}", occurred_at=f"{year}-{month:02d}-1{i}T10:00:00Z"
                    )
                    for i in range(3)
                ]
                start.wait()  # every client sends its first batch of the month at once
                response = http.post(
                    "/api/v1/usage",
                    json={"records": batch},
                    headers={"Authorization": f"Bearer {key}"},
                )
                answers.append((response.status_code, response.text))

    # when the clients post the first batches of those months at the same moment
    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then every request was accepted in full, and each month now has its partition
    failed = [a for a in answers if a[0] != 200 or '"accepted":3' not in a[1].replace(" ", "")]
    assert failed == []
    assert len(answers) == CLIENTS * len(MONTHS)
    assert UsageRecord.objects.count() == CLIENTS * len(MONTHS) * 3
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_class WHERE relname = ANY(%s)",
            [[partitions.partition_name(y, m) for y, m in MONTHS]],
        )
        assert cursor.fetchone()[0] == len(MONTHS)
