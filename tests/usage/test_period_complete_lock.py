"""`usage.closing.period_complete` waits for every in-flight ingest batch: a batch that read the
month as open must commit before the month completes, or its record would be neither in the run
nor late (docs/billing.md, "Late usage of a pair without a settlement")."""

from __future__ import annotations

import threading

import psycopg
import pytest
from django.db import connection

from tests.conftest import subprocess_database_url
from usage.closing import INGEST_LOCKS_SQL, period_complete
from usage.models import PeriodComplete


@pytest.mark.django_db(transaction=True)
def test_it_waits_for_a_batch_in_flight() -> None:
    # given: a batch of host 7 in flight, holding the ingest locks
    with psycopg.connect(subprocess_database_url()) as batch:
        batch.execute(INGEST_LOCKS_SQL, {"host": 7})
        done = threading.Event()

        def complete() -> None:
            try:
                period_complete(period="2026-10", open_pairs=set(), since=None)
                done.set()
            finally:
                connection.close()

        # when: the month completes meanwhile
        worker = threading.Thread(target=complete)
        worker.start()
        # then: it waits until the batch commits
        assert not done.wait(1.0)
        assert not PeriodComplete.objects.exists()
        batch.commit()
        worker.join(10)
    assert done.is_set()
    assert PeriodComplete.objects.filter(period="2026-10").exists()
