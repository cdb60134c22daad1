"""Deemed acceptance: `review_days` on the terms that rated a settlement's usage set its
`review_due_at`; `deem_settlements [--as-of]` approves drafts past it as `deemed`."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from billing.deeming import deem_settlements
from billing.models import Settlement
from ledger.models import JournalEntry
from licensing.catalog import CatalogError, catalog_import
from licensing.models import Agreement, Host, Licensor
from tests.billing.conftest import minimax_catalog, post_usage, record, run_billing


def _catalog(review_days: Any) -> dict[str, Any]:
    """The MiniMax world; the Fireworks agreement (which rates all its usage) carries
    `review_days`, the public version 30 (it rates none of it)."""
    catalog = minimax_catalog()
    catalog["licenses"][0]["versions"][0]["review_days"] = 30
    if review_days is not None:
        catalog["agreements"][0]["review_days"] = review_days
    return catalog


def _billed(review_days: int | None, client_for: Callable[..., APIClient]) -> Settlement:
    catalog_import(_catalog(review_days))
    host = Host.objects.get(slug="fireworks")
    post_usage(client_for(host=host), [record("c-1", revenue="75300.00")])
    run_billing("2026-10")
    return Settlement.objects.get(period="2026-10")


def _deem(as_of: str) -> str:
    out = io.StringIO()
    call_command("deem_settlements", "--as-of", as_of, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_deems_a_draft_accepted_at_its_due_date_and_not_before(
    client_for: Callable[..., APIClient],
) -> None:
    # given a draft rated under an agreement with 14 review days
    s = _billed(14, client_for)
    due = s.computed_at + timedelta(days=14)
    assert s.review_due_at == due

    # when: a re-run a moment later does not move it
    run_billing("2026-10")
    s.refresh_from_db()
    assert s.review_due_at == due

    # when: one second before the due date, then at it
    before = _deem((due - timedelta(seconds=1)).isoformat())
    s.refresh_from_db()
    assert s.status == "draft"
    at = _deem(due.isoformat())

    # then: approved as deemed, with the accrual, and "deemed" by the system in its history
    assert before.endswith("0 settlement(s) deemed accepted\n")
    assert "1 settlement(s) deemed accepted" in at
    s.refresh_from_db()
    assert (s.status, s.decided_by) == ("approved", "deemed")
    assert JournalEntry.objects.filter(reference_type="settlement").count() == 1
    assert list(s.events.values_list("actor", "action")) == [
        ("system", "computed"),
        ("system", "deemed"),
    ]


@pytest.mark.django_db
def test_it_never_deems_without_review_days(client_for: Callable[..., APIClient]) -> None:
    # given a draft whose terms (the agreement) have no review_days
    s = _billed(None, client_for)
    assert s.review_due_at is None

    # when: long after
    _deem("2099-01-01T00:00:00Z")

    # then
    s.refresh_from_db()
    assert s.status == "draft"


@pytest.mark.django_db
def test_it_never_deems_a_disputed_settlement(client_for: Callable[..., APIClient]) -> None:
    # given a disputed settlement with a due date
    s = _billed(1, client_for)
    licensor = client_for(licensor=Licensor.objects.get(slug="minimax"))
    licensor.post(f"/api/v1/settlements/{s.pk}/dispute", {"reason": "x"}, format="json")

    # when: the beat task runs long after the due date
    deemed = deem_settlements.apply(kwargs={}).get()  # type: ignore[attr-defined]
    _deem("2099-01-01T00:00:00Z")

    # then
    s.refresh_from_db()
    assert (deemed, s.status) == (0, "disputed")


@pytest.mark.django_db
def test_it_shows_review_due_at_in_the_api(client_for: Callable[..., APIClient]) -> None:
    # given
    s = _billed(14, client_for)
    licensor = client_for(licensor=Licensor.objects.get(slug="minimax"))

    # when
    body = licensor.get(f"/api/v1/settlements/{s.pk}").json()

    # then
    assert body["review_due_at"] == (s.computed_at + timedelta(days=14)).isoformat().replace(
        "+00:00", "Z"
    )


@pytest.mark.django_db
def test_it_refuses_an_as_of_without_offset() -> None:
    with pytest.raises(CommandError, match="--as-of"):
        _deem("2026-11-30T00:00:00")


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [0, -3, "7", 1.5, True])
def test_it_refuses_review_days_that_are_not_an_integer_of_at_least_1(bad: Any) -> None:
    # when
    with pytest.raises(CatalogError) as caught:
        catalog_import(_catalog(bad))

    # then: the path names the field; nothing was imported
    assert "agreements[0].review_days: must be an integer of at least 1, or null" in str(
        caught.value
    )
    assert not Agreement.objects.exists()


@pytest.mark.django_db
def test_it_imports_review_days_on_versions_and_agreements() -> None:
    # when
    catalog_import(_catalog(14))

    # then
    agreement = Agreement.objects.get()
    assert agreement.review_days == 14
    assert agreement.license.versions.get().review_days == 30
