"""`make demo`'s steps before serving, run as a test: seed, then the demo keys and logins work."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from billing.demo import DEMO_PASSWORD
from billing.webhook_models import WebhookDelivery, WebhookEndpoint
from core.money import quantize
from ledger.testing import books_wipe
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
    assert Settlement.objects.count() == 9  # 8, and the revision of the disputed one
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
        ("2026-10", "superseded"),  # the demo's dispute, revised (billing/demo_disputes.py)
    ]
    assert "OK: every entry balances and the chain holds" in out.getvalue()


@pytest.fixture
def _books_wiped_after() -> Iterator[None]:
    """A transactional test commits ledger entries; the flush that ends it may not TRUNCATE the
    books while they hold any (ledger_refuse_truncate)."""
    yield
    books_wipe()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_books_wiped_after")
def test_the_demo_disputes_revises_tells_the_reviewer_and_delivers_webhooks(
    settings: Any, mailoutbox: list[EmailMessage]
) -> None:
    # given: private webhook addresses allowed, as `make demo` does
    settings.TOLLGATE_WEBHOOKS_ALLOW_PRIVATE = True

    # when: the demo's steps before serving, its webhook receiver on a free port
    out = StringIO()
    call_command("seed_demo", "--usage", "--period", "2026-10", "--webhook-port", "0", stdout=out)
    text = out.getvalue()

    # then: MiniMax's reviewer disputed Nebius's settlement and the run revised it
    from billing.models import Settlement

    disputed = Settlement.objects.get(licensor__slug="minimax", host__slug="nebius", revision=1)
    revision = Settlement.objects.get(supersedes=disputed)
    assert (disputed.status, disputed.dispute_reason_code) == ("superseded", "missing_usage")
    assert (revision.revision, revision.status) == (2, "draft")
    assert revision.total > disputed.total
    assert ("admin:minimax", "disputed") in disputed.events.values_list("actor", "action")
    assert f"the run wrote revision 2: EUR {quantize(revision.total, 'EUR')}, draft" in text

    # and: MiniMax's endpoint got every event, each signature verified by the receiver
    endpoint = WebhookEndpoint.objects.get(licensor__slug="minimax")
    deliveries = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert sorted(deliveries.values_list("event__type", flat=True)) == [
        "payout.created",  # MiniMax paid out by bank transfer (billing/demo_payouts.py)
        "payout.paid",
        "settlement.approved",
        "settlement.created",
        "settlement.created",
        "settlement.created",
        "settlement.disputed",
        "settlement.paid",  # Fireworks' paid by bank transfer
        "settlement.revised",
    ]
    assert set(deliveries.values_list("status", "last_status_code")) == {("succeeded", 200)}
    for delivery in deliveries:
        assert f"{delivery.event.type:<20} {delivery.event_id}" in text
    assert text.count("signature verified") == 9 and "DOES NOT VERIFY" not in text
    # and they are in the admin's delivery log
    admin = Client()
    assert admin.login(username="admin", password=DEMO_PASSWORD)
    log = admin.get("/admin/billing/webhookdelivery/").content.decode()
    assert all(d.event_id in log for d in deliveries)

    # and: the reviewer was emailed the drafts, then the revision, and nobody else anything
    # (the re-run that wrote the revision changed no other draft: no second list of drafts)
    assert {tuple(m.to) for m in mailoutbox} == {("billing@minimax.example",)}
    subjects = [m.subject for m in mailoutbox]
    assert subjects == [
        "[Tollgate] 3 settlements for 2026-10 await your review",
        "[Tollgate] Revision 2 of Nebius AI Studio's 2026-10 settlement to review",
    ]
    was, now = quantize(disputed.total, "EUR"), quantize(revision.total, "EUR")
    assert (
        f"total:      EUR {now:,} (was EUR {was:,}, change EUR {now - was:,})" in mailoutbox[1].body
    )


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
