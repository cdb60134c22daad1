"""`make demo`'s steps before serving, run as a test: seed, then the demo keys and logins work."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from billing.demo import DEMO_PASSWORD
from licensing.models import Agreement, ApiKey, Host, LicensedModel

pytestmark = pytest.mark.django_db


def keys_in(output: str) -> dict[str, str]:
    keys = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in {"host", "licensor"}:
            keys[f"{parts[0]}:{parts[1]}"] = parts[2]
    return keys


def test_it_seeds_the_demo_world_idempotently() -> None:
    # when the demo is seeded twice
    first, second = StringIO(), StringIO()
    call_command("seed_demo", stdout=first)
    call_command("seed_demo", stdout=second)

    # then the world is there once: three hosts in two currencies, derivatives, agreements
    assert sorted(Host.objects.values_list("currency", flat=True)) == ["EUR", "USD", "USD"]
    fp8 = LicensedModel.objects.get(slug="minimax-m2.7-fp8")
    assert fp8.effective_license().slug == "minimax-m27"
    assert Agreement.objects.filter(license__slug="minimax-m27").count() == 3
    assert "total: 0 created, 0 updated, 25 unchanged" in second.getvalue()
    # and the same keys are printed every run, stored once
    assert keys_in(first.getvalue()) == keys_in(second.getvalue())
    assert ApiKey.objects.count() == len(keys_in(first.getvalue())) == 7


def test_the_printed_keys_and_logins_work() -> None:
    # given a seeded demo
    out = StringIO()
    call_command("seed_demo", stdout=out)
    keys = keys_in(out.getvalue())

    # then the host key lists models, and the admin login reaches the admin
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['host:fireworks']}")
    assert api.get("/api/v1/models").status_code == 200
    browser = Client()
    assert browser.login(username="admin", password=DEMO_PASSWORD)
    assert browser.get("/admin/licensing/license/").status_code == 200
    assert f"admin / {DEMO_PASSWORD}" in out.getvalue()


def test_the_demo_posts_a_month_bills_it_and_prints_the_settlements() -> None:
    # when the demo's steps before serving run (make demo = seed_demo --serve)
    out = StringIO()
    call_command("seed_demo", "--usage", "--period", "2026-10", stdout=out)

    # then every record was accepted through the API and billed into draft settlements
    from billing.models import Settlement

    text = out.getvalue()
    assert "fireworks    2000 accepted       0 duplicates     0 rejected" in text
    together = Settlement.objects.get(licensor__slug="minimax", host__slug="together")
    assert together.status == "draft"
    assert together.total == Decimal("10000.00")  # the minimum guarantee
    assert "minimum guarantee true-up" in text
    assert "minimax <- nebius  EUR" in text
    # and the approved one is on the books, which verify_ledger finds clean
    assert Settlement.objects.get(licensor__slug="minimax", host__slug="fireworks").status == (
        "approved"
    )
    assert "OK: every entry balances and the chain holds" in text

    # and running it again changes nothing: the records are duplicates, the drafts the same
    again = StringIO()
    call_command("seed_demo", "--usage", "--period", "2026-10", stdout=again)
    assert "fireworks       0 accepted    2000 duplicates     0 rejected" in again.getvalue()
    assert Settlement.objects.count() == 8
    together.refresh_from_db()
    assert together.status == "draft"


def test_the_demo_bills_months_of_history_for_the_charts() -> None:
    # when: the demo with two months of history before October
    out = StringIO()
    call_command("seed_demo", "--usage", "--period", "2026-10", "--history", "2", stdout=out)

    # then: August and September are billed and approved, October awaits review
    from billing.models import Settlement

    assert "2026-08    1685 records  7 settlements billed, approved" in out.getvalue()
    periods = Settlement.objects.filter(licensor__slug="minimax").values_list("period", "status")
    assert sorted(set(periods)) == [
        ("2026-08", "approved"),
        ("2026-09", "approved"),
        ("2026-10", "approved"),  # Fireworks', approved by the demo as before
        ("2026-10", "draft"),
    ]
    assert "OK: every entry balances and the chain holds" in out.getvalue()
