"""The licensor's workspace in real Chromium (docs/workspace.md): a reviewer reads the home page,
opens a settlement, drills from a line to its records and downloads the CSV statement. Each page
is saved as a screenshot under SCREENSHOTS (.data/screenshots/workspace unless
TOLLGATE_SCREENSHOTS names another directory)."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect
from rest_framework.test import APIClient

from billing.models import Settlement
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor, LicensorMembership
from licensing.selectors import licensor_reviewer_permissions
from tests.billing.conftest import (
    minimax_catalog,
    post_usage,
    record,
    run_billing,
    second_licensor_catalog,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "browser-pass-1"
SCREENSHOTS = Path(
    os.environ.get(
        "TOLLGATE_SCREENSHOTS",
        Path(__file__).resolve().parents[2] / ".data" / "screenshots" / "workspace",
    )
)
MONTHS = ("2026-08", "2026-09", "2026-10")


@pytest.fixture
def world(client_for: Callable[..., APIClient]) -> APIClient:
    """MiniMax at Fireworks and Together for three months, with a record per day and region
    (so the drill-down has groups and more than one page); Kimi at Fireworks. Returns MiniMax's
    API client, whose answers the pages must match."""
    catalog_import(minimax_catalog(hosts=("fireworks", "together")))
    catalog_import(second_licensor_catalog())
    for n, slug in enumerate(("fireworks", "together")):
        client = client_for(host=Host.objects.get(slug=slug))
        for i, month in enumerate(MONTHS):
            records = [
                record(
                    f"{slug}-{month}-{day:02d}-{region}",
                    revenue=f"{(n + 1) * (100 + 40 * i) + day}.25",
                    at=f"{month}-{day:02d}T0{day % 10}:30:00Z",
                    input_tokens=1_000_000 * day,
                    output_tokens=250_000 * day,
                    region=region,
                )
                for day in range(1, 29)
                for region in ("US", "DE")
            ]
            records.append(
                record(
                    f"{slug}-{month}-free",
                    revenue="9.00",
                    at=f"{month}-03T00:00:00Z",
                    category="research",
                )
            )
            records.append(
                record(
                    f"{slug}-{month}-kimi",
                    revenue="50.00",
                    model="kimi-k2.5",
                    at=f"{month}-04T00:00:00Z",
                )
            )
            post_usage(client, records)
    for month in MONTHS:
        run_billing(month)
    return client_for(licensor=Licensor.objects.get(slug="minimax"))


@pytest.fixture
def reviewer() -> User:
    user = User.objects.create_user("mm-reviewer", password=PASSWORD, is_staff=True)
    LicensorMembership.objects.create(user=user, licensor=Licensor.objects.get(slug="minimax"))
    user.user_permissions.add(*licensor_reviewer_permissions())
    return user


def shot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_a_reviewer_reads_earnings_checks_a_settlement_and_downloads_its_statement(
    world: APIClient, reviewer: User, page: Page, live_server: object
) -> None:
    base = str(live_server)

    # when: the reviewer logs in
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", reviewer.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")

    # then: the home page, with the drafts awaiting review and the charts
    expect(page.locator("h1")).to_contain_text("MiniMax")
    expect(page.locator("tr.tg-awaiting")).to_have_count(6)  # 2 hosts x 3 months
    expect(page.locator("svg.tg-chart")).to_have_count(2)  # by host and by model, USD
    expect(page.locator("#content")).not_to_contain_text("kimi")
    for month in MONTHS:
        api = world.get(f"/api/v1/settlements?period={month}").json()["results"]
        expected = sum((Decimal(s["total"]) for s in api), Decimal(0))
        bar = page.locator(f"svg.tg-chart >> nth=0 >> text.tg-bar-total[data-period='{month}']")
        assert Decimal(bar.get_attribute("data-amount") or "") == expected, month
    shot(page, "1-home")

    # when: the October settlement of Fireworks
    page.locator("tr.tg-awaiting", has_text="Fireworks").filter(has_text="2026-10").locator(
        "a"
    ).click()

    # then: the statement, with thousands separators and September's change
    october = Settlement.objects.get(
        licensor__slug="minimax", host__slug="fireworks", period="2026-10"
    )
    detail = world.get(f"/api/v1/settlements/{october.pk}").json()
    expect(page.locator("#statement-total")).to_contain_text(f"{Decimal(detail['total']):,}")
    commercial = page.locator("tr.tg-line", has_text="commercial")
    expect(commercial).to_contain_text("812,000,000")  # input tokens: 2 regions x 1M x (1+...+28)
    expect(commercial).to_contain_text("+")
    expect(page.locator("#download-verification-kit")).to_have_attribute(
        "href", f"/admin/billing/settlement/{october.pk}/kit.zip"
    )
    shot(page, "2-statement")

    # when: the CSV statement is downloaded
    with page.expect_download() as download:
        page.click("#download-statement-csv")
    csv_path = download.value.path()

    # then: the API's statement, byte for byte
    api_csv = world.get(f"/api/v1/settlements/{october.pk}/statement.csv").content
    assert Path(csv_path).read_bytes() == api_csv

    # when: the verification kit is downloaded, with the session and no API key
    with page.expect_download() as kit_download:
        page.click("#download-verification-kit")

    # then: a zip whose settlement.json is the API kit's
    api_kit = b"".join(world.get(f"/api/v1/settlements/{october.pk}/kit").streaming_content)  # type: ignore[attr-defined]
    with (
        zipfile.ZipFile(kit_download.value.path()) as kit,
        zipfile.ZipFile(io.BytesIO(api_kit)) as api_zip,
    ):
        assert {"settlement.json", "terms.json", "usage.ndjson", "README.md"} <= set(kit.namelist())
        assert kit.read("settlement.json") == api_zip.read("settlement.json")

    # when: the drill-down from the commercial line
    commercial.locator("a.tg-drill").click()

    # then: 28 days x 2 regions of groups, and the 56 records 50 a page
    expect(page.locator("#usage-groups tbody tr")).to_have_count(56)
    expect(page.locator("tr.tg-record")).to_have_count(50)
    expect(page.locator("#usage-records")).to_contain_text("fireworks-2026-10-01-US")
    expect(page.locator("#content")).not_to_contain_text("together-")
    shot(page, "3-line-usage")
    page.click("#next-page")
    expect(page.locator("tr.tg-record")).to_have_count(6)
    shot(page, "4-line-usage-page-2")
