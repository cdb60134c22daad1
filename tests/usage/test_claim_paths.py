"""The fast path claims a batch with no resend by one COPY into usage_key, and falls back to the
ON CONFLICT claim when the probe sees a resend or the COPY meets a claimed event_id: the answer
and what is stored are the same whichever way the claim went."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from django.db import connection

from licensing.services import api_key_create
from tests.usage.conftest import AT, NOW, record
from usage import columns
from usage.models import UsageKey, UsageRecord
from usage.services import CLAIMS_BY_PATH, PROBE_IDS, usage_batch_ingest_valid


def _claims(send: Callable[[], Any]) -> tuple[Any, Counter[str]]:
    """What `send` returned, and the claims it made by path."""
    before = CLAIMS_BY_PATH.copy()
    answer = send()
    return answer, CLAIMS_BY_PATH - before


def _off_probe(count: int, index: int = 1) -> int:
    """`index`, checked to be one the probe of a batch of `count` records does not look at (it
    looks at every step-th record from the first)."""
    step = max(1, count // PROBE_IDS)
    assert index % step, (index, step)
    return index


def _decoded(records: list[dict[str, Any]]) -> columns.ValidBatch:
    """`records` decoded for the fast path, as POST /api/v1/usage decodes them."""
    batch = columns.decode_valid(
        json.dumps({"records": records}).encode(), "application/json", now=NOW
    )
    assert batch is not None
    return batch


def test_it_claims_a_batch_without_resends_by_copy_and_its_resend_by_on_conflict(
    catalog: Any, host: Any, post: Any
) -> None:
    # given a batch of new records
    batch = [record(f"new-{i}", input_tokens=i) for i in range(300)]

    # when it is sent, then all of it is accepted, claimed by one COPY
    answer, claims = _claims(lambda: post(batch).json())
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (300, 0, 0)
    assert claims == Counter(copy=1)
    assert (UsageKey.objects.count(), UsageRecord.objects.count()) == (300, 300)

    # when the whole batch is sent again, then the probe sees the resend and ON CONFLICT claims
    answer, claims = _claims(lambda: post(batch).json())
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (0, 300, 0)
    assert claims == Counter(on_conflict=1)
    assert (UsageKey.objects.count(), UsageRecord.objects.count()) == (300, 300)


@pytest.mark.parametrize(
    ("resent", "status"),
    [({}, "duplicate"), ({"input_tokens": 999_999}, "conflict")],
    ids=["same content", "other content"],
)
def test_it_falls_back_when_the_copy_meets_a_resend_the_probe_missed(
    catalog: Any, host: Any, post: Any, resent: dict[str, Any], status: str
) -> None:
    # given a stored record, and a batch of new records that holds it where the probe does not
    # look, resent as it was or with other content
    assert post([record("old", input_tokens=7)]).json()["accepted"] == 1
    stored = UsageRecord.objects.values_list("input_tokens", "content_hash").get()
    batch = [record(f"new-{i}", input_tokens=i) for i in range(300)]
    batch.insert(_off_probe(len(batch) + 1), record("old", **{"input_tokens": 7, **resent}))

    # when it is sent
    answer, claims = _claims(lambda: post(batch).json())

    # then the COPY was refused and the ON CONFLICT claim answered as it always does
    assert claims == Counter(copy_refused=1)
    assert (answer["accepted"], answer["duplicates"]) == (300, int(status == "duplicate"))
    [result] = answer["results"]
    assert (result["index"], result["event_id"]) == (1, "old")
    assert result["status"] == ("duplicate" if status == "duplicate" else "rejected")
    if status == "conflict":
        assert result["errors"]["event_id"][0].startswith("conflict:")
    # and nothing of the refused COPY is left: one claim and one record per event_id, and the
    # stored record as it was
    assert (UsageKey.objects.count(), UsageRecord.objects.count()) == (301, 301)
    old = UsageRecord.objects.filter(event_id="old").values_list("input_tokens", "content_hash")
    assert old.get() == stored


LOCK_WAITERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'COPY usage_key%'
"""


def _conninfo() -> str:
    """A connection string to the test database, for a transaction of another session."""
    settings = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        dbname=settings["NAME"],
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"] or None,
        password=settings["PASSWORD"] or None,
    )


def _lock_waiters(watcher: psycopg.Connection[Any]) -> int:
    """How many COPYs into usage_key wait for a lock, once one does (at most 30 s)."""
    for _ in range(600):
        row = watcher.execute(LOCK_WAITERS).fetchone()
        if row and row[0]:
            return int(row[0])
        time.sleep(0.05)
    return 0


@pytest.mark.django_db(transaction=True)
def test_it_falls_back_when_a_concurrent_batch_commits_the_same_event_id_first(
    catalog: Any, host: Any
) -> None:
    # given a batch of new records, decoded for the fast path
    records = [record(f"new-{i}", input_tokens=i) for i in range(300)]
    batch = _decoded(records)
    # and another transaction that has claimed one of its event_ids, off the probe, and not
    # committed yet; it commits once our COPY waits for its key
    taken = records[_off_probe(len(records))]["event_id"]
    conninfo = _conninfo()
    waited: list[int] = []

    def other_batch() -> None:
        with psycopg.connect(conninfo) as other:
            other.execute(
                "INSERT INTO usage_key (host_id, event_id, content_hash, occurred_at)"
                " VALUES (%s, %s, %s, %s)",
                [host.pk, taken, bytes(16), AT],
            )
            with psycopg.connect(conninfo, autocommit=True) as watcher:
                waited.append(_lock_waiters(watcher))
            other.commit()

    # when our batch is written while the other transaction holds that claim
    thread = threading.Thread(target=other_batch)
    thread.start()
    try:
        result, claims = _claims(lambda: usage_batch_ingest_valid(host=host, batch=batch, now=NOW))
    finally:
        thread.join()

    # then our COPY waited for the other's key, was refused once it committed, and the
    # ON CONFLICT claim answered: the event_id it took is a conflict, the rest accepted
    assert waited == [1]
    assert claims == Counter(copy_refused=1)
    assert result is not None
    assert (result.accepted, result.rejected) == (299, 1)
    [answer] = result.results
    assert (answer["index"], answer["event_id"], answer["status"]) == (1, taken, "rejected")
    # and each event_id is claimed once, the taken one by the other transaction, with no record
    assert UsageKey.objects.count() == 300
    assert UsageKey.objects.get(event_id=taken).content_hash == bytes(16)
    assert UsageRecord.objects.count() == 299
    assert not UsageRecord.objects.filter(event_id=taken).exists()


@pytest.mark.django_db(transaction=True)
def test_it_stores_a_new_batch_once_when_four_clients_send_it_at_the_same_time(
    catalog: Any, host: Any, live_server: Any
) -> None:
    # given one batch of new records, and four clients ready to send it
    batch = [record(f"same-{i}", input_tokens=i) for i in range(500)]
    body = orjson.dumps({"records": batch})
    key = api_key_create(host=host).key
    start = threading.Barrier(4)
    answers: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with httpx.Client(base_url=live_server.url, timeout=60) as http:
                start.wait()
                response = http.post(
                    "/api/v1/usage",
                    content=body,
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                )
                answers.append((response.status_code, response.content))
        except BaseException as exc:
            errors.append(exc)

    # when all four send it at once
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then one answer accepted every record and the three others found them all duplicates
    assert errors == []
    assert sorted(status for status, _ in answers) == [200] * 4
    counts = sorted(
        (a["accepted"], a["duplicates"]) for a in map(orjson.loads, (b for _, b in answers))
    )
    assert counts == [(0, 500), (0, 500), (0, 500), (500, 0)]
    # and every record is stored once
    assert (UsageKey.objects.count(), UsageRecord.objects.count()) == (500, 500)


@pytest.mark.django_db(transaction=True)
def test_it_retries_the_batch_when_its_copy_is_chosen_to_break_a_deadlock(
    catalog: Any, host: Any
) -> None:
    # given a batch of new records, two of them off the probe ("new-1" sorts before "new-5")
    records = [record(f"new-{i}", input_tokens=i) for i in range(300)]
    batch = _decoded(records)
    first, second = (records[_off_probe(len(records), i)]["event_id"] for i in (1, 5))
    assert first < second
    # and another transaction that claims the second, waits until our COPY waits for it, then
    # claims the first, which our COPY holds: a deadlock, which PostgreSQL breaks by aborting
    # the transaction that waited first, ours; the other commits once our retry waits for it
    conninfo = _conninfo()
    steps: list[str] = []

    def other_batch() -> None:
        with psycopg.connect(conninfo) as other, psycopg.connect(conninfo, autocommit=True) as w:
            claim = "INSERT INTO usage_key VALUES (%s, %s, %s, %s)"
            other.execute(claim, [host.pk, second, bytes(16), AT])
            steps.append(f"waited for {_lock_waiters(w)}")
            other.execute(claim, [host.pk, first, bytes(16), AT])
            steps.append(f"waited for {_lock_waiters(w)}")
            other.commit()

    # when our batch is written
    thread = threading.Thread(target=other_batch)
    thread.start()
    try:
        result, claims = _claims(lambda: usage_batch_ingest_valid(host=host, batch=batch, now=NOW))
    finally:
        thread.join()

    # then the other transaction got both claims, and our retry's COPY was refused on them: the
    # ON CONFLICT claim answered the two as conflicts and accepted the rest
    assert steps == ["waited for 1", "waited for 1"]
    assert claims == Counter(copy_refused=1)
    assert result is not None
    assert (result.accepted, result.rejected) == (298, 2)
    assert sorted((r["index"], r["status"]) for r in result.results) == [
        (1, "rejected"),
        (5, "rejected"),
    ]
    assert UsageKey.objects.count() == 300
    assert UsageRecord.objects.count() == 298
