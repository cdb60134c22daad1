"""The admin journal browser: read-only, filterable by party and currency."""

from __future__ import annotations

import pytest

from ledger.models import Account, JournalEntry
from ledger.services import PostingSpec, journal_post

pytestmark = pytest.mark.django_db


def _post(usd: dict[str, Account], key: str) -> JournalEntry:
    return journal_post(
        idempotency_key=key,
        memo=f"memo {key}",
        postings=[
            PostingSpec(account=usd["receivable"], amount_minor=100),
            PostingSpec(account=usd["payable"], amount_minor=-100),
        ],
        reference_type="settlement",
        reference_id=key,
    )


def test_it_lists_entries_filtered_by_party_and_currency(admin_client, usd, parties):
    # given: one entry touching the host and the licensor
    entry = _post(usd, "browse")
    host, _ = parties
    # when: the journal is browsed, filtered by the host and USD, then by the platform
    by_host = admin_client.get(
        "/admin/ledger/journalentry/", {"party": f"host:{host.pk}", "currency": "USD"}
    )
    by_platform = admin_client.get("/admin/ledger/journalentry/", {"party": "platform"})
    # then: the host's view shows it, the platform's does not
    assert by_host.status_code == 200 and "memo browse" in by_host.content.decode()
    assert by_platform.status_code == 200 and "memo browse" not in by_platform.content.decode()
    detail = admin_client.get(f"/admin/ledger/journalentry/{entry.pk}/change/")
    assert detail.status_code == 200 and entry.hash in detail.content.decode()


def test_it_offers_no_add_change_or_delete(admin_client, usd):
    # given: a posted entry
    entry = _post(usd, "readonly")
    # when: the add and delete pages are requested, and a change is posted
    add = admin_client.get("/admin/ledger/journalentry/add/")
    delete = admin_client.get(f"/admin/ledger/journalentry/{entry.pk}/delete/")
    change = admin_client.post(f"/admin/ledger/journalentry/{entry.pk}/change/", {"memo": "edited"})
    # then: all are refused and the entry is unchanged
    assert add.status_code == 403
    assert delete.status_code == 403
    assert change.status_code == 403
    assert JournalEntry.objects.get(pk=entry.pk).memo == "memo readonly"
