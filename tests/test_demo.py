"""`make demo`'s steps before serving, run as a test: seed, then the demo keys and logins work."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO
from typing import Any

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
    assert "total: 0 created, 0 updated, 26 unchanged" in second.getvalue()
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
    # (then paid by its host by bank transfer: docs/payouts.md "In the demo")
    assert Settlement.objects.get(licensor__slug="minimax", host__slug="fireworks").status == (
        "paid"
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

    # then: August and September are billed and approved (and paid), October awaits review
    from billing.models import Settlement

    assert "2026-08    1685 records  7 settlements billed, approved" in out.getvalue()
    periods = Settlement.objects.filter(licensor__slug="minimax").values_list("period", "status")
    assert sorted(set(periods)) == [
        ("2026-08", "paid"),  # approved, then paid by the host (docs/payouts.md "In the demo")
        ("2026-09", "paid"),
        ("2026-10", "draft"),
        ("2026-10", "paid"),  # Fireworks', approved by the demo as before, then paid
    ]
    assert "OK: every entry balances and the chain holds" in out.getvalue()


def test_the_demo_pays_hosts_and_one_licensor_by_each_rail_without_stripe(settings: Any) -> None:
    # given: no Stripe (the demo's default)
    settings.STRIPE_API_KEY = ""

    # when: the demo with a month of history, twice
    out = StringIO()
    call_command("seed_demo", "--usage", "--period", "2026-10", "--history", "1", stdout=out)
    call_command("seed_demo", "--usage", "--period", "2026-10", "--history", "1", stdout=StringIO())

    # then: every approved settlement of MiniMax and Moonshot paid by bank transfer; MiniMax paid
    # out by hand with a bank reference, Moonshot's Connect payout waiting for Stripe, said so
    from billing.models import Payout, Settlement
    from ledger.selectors import party_balances
    from licensing.models import Licensor

    text = out.getvalue()
    assert (
        "minimax <- fireworks 2026-10: paid by bank transfer, reference "
        "DEMO-IN-MINIMAX-FIREWORKS-2026-10" in text
    )
    assert "moonshot <- together 2026-10: paid by bank transfer" in text
    paid = Settlement.objects.filter(status="paid")
    assert set(paid.values_list("licensor__slug", flat=True)) == {"minimax", "moonshot"}
    payouts = {(p.licensor.slug, p.currency): p for p in Payout.objects.select_related("licensor")}
    assert sorted(payouts) == [("minimax", "EUR"), ("minimax", "USD"), ("moonshot", "USD")]
    manual = payouts[("minimax", "USD")]
    assert (manual.rail, manual.status) == ("manual", "paid")
    assert manual.reference == "DEMO-OUT-MINIMAX-USD-2026-11-05"
    connect = payouts[("moonshot", "USD")]
    assert (connect.rail, connect.status, connect.reference) == ("stripe_connect", "pending", None)
    assert "STRIPE_API_KEY is not set: the demo has no Stripe server" in text
    minimax = Licensor.objects.get(slug="minimax")
    # every approved settlement was paid and paid out; drafts are not on the books
    assert party_balances(owner=minimax) == {"EUR": {"payable": 0}, "USD": {"payable": 0}}
    moonshot = Licensor.objects.get(slug="moonshot")
    assert party_balances(owner=moonshot) == {"USD": {"payable": -connect.net_minor}}
    assert "OK: every entry balances and the chain holds" in text
