"""Fixtures for the ledger's tests: parties, accounts, raw-SQL helpers and thread helpers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection

from ledger.models import Account, AccountKind
from ledger.services import account_for
from ledger.testing import books_wipe
from licensing.models import Host, Licensor
from tests.factories import HostFactory, LicensorFactory


@pytest.fixture(autouse=True)
def _wipe_books_before_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """A transactional test commits entries, and the flush that ends it may not TRUNCATE the
    books while they hold any (ledger_refuse_truncate): empty them first, behind the triggers."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        yield
        return
    # Set up the database first, so that this teardown runs before its flush.
    request.getfixturevalue("transactional_db")
    yield
    books_wipe()


@pytest.fixture
def parties(db: None) -> tuple[Host, Licensor]:
    return HostFactory(slug="ledger-host"), LicensorFactory(slug="ledger-licensor")


@pytest.fixture
def usd(parties: tuple[Host, Licensor]) -> dict[str, Account]:
    """The four accounts of the money flow in USD."""
    host, licensor = parties
    return {
        "receivable": account_for(owner=host, kind=AccountKind.RECEIVABLE, currency="USD"),
        "payable": account_for(owner=licensor, kind=AccountKind.PAYABLE, currency="USD"),
        "cash": account_for(owner=None, kind=AccountKind.CASH, currency="USD"),
        "revenue": account_for(owner=None, kind=AccountKind.PLATFORM_REVENUE, currency="USD"),
    }


def insert_raw_entry(cursor: Any, key: str) -> int:
    """Insert an entry by raw SQL that extends the chain (as any client must), without postings.
    Its hash is not the real one: the database checks the link, verify_ledger checks the hash."""
    cursor.execute("SELECT head_sequence, head_hash FROM ledger_chain_head()")
    head_sequence, head_hash = cursor.fetchone()
    cursor.execute(
        "INSERT INTO ledger_journalentry (sequence, idempotency_key, memo, reference_type,"
        " reference_id, created_at, prev_hash, hash)"
        " VALUES (%s, %s, '', 'test', '', now(), %s, %s) RETURNING id",
        [(head_sequence or 0) + 1, key, head_hash or "0" * 64, "a" * 64],
    )
    return int(cursor.fetchone()[0])


def run_in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads started together, each on its own connection; return
    each result or the exception it raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # the test inspects it
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results
