"""A manual payout in real Chromium (docs/payouts.md, docs/workspace.md): an operator records the
bank transfer of a pending payout in the admin, then the licensor's reviewer finds it paid, with
that bank reference, on its payouts page and downloads the CSV statement. Each page is saved as a
screenshot under SCREENSHOTS (.data/screenshots/payouts unless TOLLGATE_SCREENSHOTS names another
directory)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect
from rest_framework.test import APIClient

from billing.models import Payout
from billing.payouts import host_payment_record, run_payouts
from billing.review import settlement_approve
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor, LicensorMembership
from licensing.selectors import licensor_reviewer_permissions
from tests.billing.conftest import (
    minimax_catalog,
    post_usage,
    record,
    run_billing,
    second_licensor_catalog,
    settlement_of,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "browser-pass-1"
SCREENSHOTS = Path(
    os.environ.get(
        "TOLLGATE_SCREENSHOTS",
        Path(__file__).resolve().parents[2] / ".data" / "screenshots" / "payouts",
    )
)
BANK_REFERENCE = "ICBC-2026-11-05-0042"


@pytest.fixture
def pending_payout(client_for: Callable[..., APIClient]) -> Payout:
    """MiniMax (manual rail, 5% fee, 10% withholding) and Kimi at Fireworks in October, both paid
    by bank transfer; the November 5th run made a pending payout for each."""
    catalog = minimax_catalog()
    catalog["licensors"][0]["payout"] = {
        "rail": "manual",
        "withholding_percent": "10",
        "platform_fee_percent": "5",
    }
    catalog_import(catalog)
    catalog_import(second_licensor_catalog())
    client = client_for(host=Host.objects.get(slug="fireworks"))
    post_usage(
        client,
        [
            record("c-1", revenue="75300.00"),
            record("k-1", revenue="2000.00", model="kimi-k2.5"),
        ],
    )
    run_billing("2026-10")
    for licensor in ("minimax", "kimi"):
        settlement = settlement_of(licensor=licensor, host="fireworks", period="2026-10")
        settlement_approve(settlement=settlement, actor="test")
        host_payment_record(settlement_id=str(settlement.pk), reference=f"IN-{licensor}")
    run_payouts(as_of=dt.date(2026, 11, 5))
    return Payout.objects.get(licensor__slug="minimax")


def shot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


def test_an_operator_records_a_bank_payout_and_the_reviewer_sees_it_paid(
    pending_payout: Payout,
    page: Page,
    live_server: object,
    client_for: Callable[..., APIClient],
) -> None:
    base = str(live_server)
    operator = User.objects.create_superuser("operator", password=PASSWORD)
    reviewer = User.objects.create_user("mm-reviewer", password=PASSWORD, is_staff=True)
    LicensorMembership.objects.create(user=reviewer, licensor=Licensor.objects.get(slug="minimax"))
    reviewer.user_permissions.add(*licensor_reviewer_permissions())
    kimi_payout = Payout.objects.get(licensor__slug="kimi")

    # when: the operator opens the payouts page, then MiniMax's payout, and records the transfer
    log_in(page, base, operator.username)
    page.click("#tg-payouts-link")
    expect(page.locator("div.tg-payout")).to_have_count(2)
    expect(page.locator(f"#payout-{pending_payout.pk} .tg-status")).to_have_text("pending")
    page.goto(f"{base}/admin/billing/payout/{pending_payout.pk}/change/")
    page.click("text=Record bank payment")
    page.fill("#id_reference", BANK_REFERENCE)
    shot(page, "1-operator-records-the-bank-payment")
    page.click("#record-payout")

    # then: the payout is paid
    expect(page.locator("ul.messagelist")).to_contain_text("as paid")
    pending_payout.refresh_from_db()
    assert (pending_payout.status, pending_payout.reference) == ("paid", BANK_REFERENCE)

    # when: the operator logs out and MiniMax's reviewer logs in and follows "Your payouts"
    page.context.clear_cookies()
    log_in(page, base, reviewer.username)
    expect(page.locator("h1")).to_contain_text("MiniMax")
    page.click("#tg-payouts-link")

    # then: its one payout, paid, with the bank reference and the amounts; nothing of Kimi's
    payout = page.locator(f"#payout-{pending_payout.pk}")
    expect(page.locator("div.tg-payout")).to_have_count(1)
    expect(payout.locator(".tg-status")).to_have_text("paid")
    expect(payout.locator(".tg-reference")).to_have_text(BANK_REFERENCE)
    # 9,036.00 less the 5% fee (451.80) and 10% withholding (858.42)
    expect(payout.locator(".tg-net")).to_have_text("7,725.78")
    expect(payout.locator(".tg-payout-settlements")).to_contain_text("2026-10")
    expect(page.locator("#content")).not_to_contain_text(str(kimi_payout.pk))
    expect(page.locator("#content")).not_to_contain_text("Kimi")
    shot(page, "2-reviewer-payouts-page")

    # when: the CSV statement is downloaded
    with page.expect_download() as download:
        payout.locator("a.tg-csv").click()

    # then: the API's statement, byte for byte
    api = client_for(licensor=Licensor.objects.get(slug="minimax"))
    expected = api.get(f"/api/v1/payouts/{pending_payout.pk}/statement.csv").content
    assert Path(download.value.path()).read_bytes() == expected
    assert b"net,,,,7725.78" in expected
