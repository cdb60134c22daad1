"""A licensor's reviewer and an operator in a real browser, against a live server."""

from __future__ import annotations

import re
from collections.abc import Callable

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


@pytest.fixture
def settlements(client_for: Callable[..., APIClient]) -> dict[str, Settlement]:
    """MiniMax has two settlements (two hosts); Kimi has one."""
    catalog_import(minimax_catalog(hosts=("fireworks", "together")))
    catalog_import(second_licensor_catalog())
    post_usage(
        client_for(host=Host.objects.get(slug="fireworks")),
        [record("f-1", revenue="75300.00"), record("f-2", revenue="10.00", model="kimi-k2.5")],
    )
    post_usage(
        client_for(host=Host.objects.get(slug="together")), [record("t-1", revenue="500.00")]
    )
    run_billing("2026-10")
    return {
        f"{s.licensor.slug}/{s.host.slug}": s
        for s in Settlement.objects.select_related("licensor", "host")
    }


def login(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(username)


@pytest.fixture
def reviewer() -> User:
    user = User.objects.create_user("mm-reviewer", password=PASSWORD, is_staff=True)
    LicensorMembership.objects.create(user=user, licensor=Licensor.objects.get(slug="minimax"))
    user.user_permissions.add(*licensor_reviewer_permissions())
    return user


def test_it_lets_a_reviewer_approve_one_of_their_settlements(
    settlements: dict[str, Settlement], reviewer: User, page: Page, live_server: object
) -> None:
    # given
    base = str(live_server)
    login(page, base, reviewer.username)

    # when: the settlement list
    page.goto(f"{base}/admin/billing/settlement/")

    # then: only MiniMax's two settlements, not Kimi's
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#result_list")).not_to_contain_text("Moonshot")

    # when: open fireworks' settlement and approve it
    page.locator("#result_list tbody tr", has_text="Fireworks").locator("th a").click()
    expect(page.locator("#content")).to_contain_text("9036.00")
    expect(page.locator("#content")).to_contain_text("12% of net revenue")
    page.click("#approve-settlement")

    # then
    expect(page.locator(".messagelist")).to_contain_text("Approved settlement")
    approved = settlements["minimax/fireworks"]
    approved.refresh_from_db()
    assert approved.status == "approved"
    assert approved.decided_by == "admin:mm-reviewer"
    expect(page.locator("#approve-settlement")).to_have_count(0)


def test_it_lets_a_reviewer_dispute_with_a_reason(
    settlements: dict[str, Settlement], reviewer: User, page: Page, live_server: object
) -> None:
    # given
    base = str(live_server)
    login(page, base, reviewer.username)
    page.goto(f"{base}/admin/billing/settlement/")

    # when: select together's settlement and run the Dispute action, giving a reason
    page.locator("#result_list tbody tr", has_text="Together").locator(
        "input.action-select"
    ).check()
    page.select_option("select[name=action]", "dispute_selected")
    page.click("button[name=index]")
    expect(page.locator("h1")).to_contain_text("Dispute settlement")
    page.fill("textarea[name=reason]", "Usage double-counted on the 12th")
    page.click("#confirm-dispute")

    # then
    expect(page.locator(".messagelist")).to_contain_text("Disputed 1 settlement")
    disputed = settlements["minimax/together"]
    disputed.refresh_from_db()
    assert (disputed.status, disputed.dispute_reason) == (
        "disputed",
        "Usage double-counted on the 12th",
    )
    expect(page.locator("#result_list tbody tr", has_text="Together")).to_contain_text("disputed")


def test_it_shows_an_operator_the_catalog_with_versions_inline(
    settlements: dict[str, Settlement], page: Page, live_server: object
) -> None:
    # given
    User.objects.create_superuser("operator", "op@example.com", PASSWORD)
    base = str(live_server)
    login(page, base, "operator")

    # when
    page.goto(f"{base}/admin/licensing/license/")
    page.get_by_role("link", name="minimax-m27").click()

    # then: the license with its version inline, locked since it rated usage
    expect(page.locator("h1, h2").first).to_be_visible()
    inline = page.locator(".inline-group")
    expect(inline.first).to_contain_text("2026-04-15")
    expect(page.locator("input[name$='-0-attribution']")).to_have_value("Built with MiniMax M2.7")
    expect(inline.first).to_contain_text(re.compile(r"Locked at", re.IGNORECASE))
    # and the operator sees every licensor's settlements
    page.goto(f"{base}/admin/billing/settlement/")
    expect(page.locator("#result_list tbody tr")).to_have_count(3)


def test_it_lets_a_reviewer_dispute_two_lines_and_see_the_revision(
    settlements: dict[str, Settlement],
    reviewer: User,
    page: Page,
    live_server: object,
    client_for: Callable[..., APIClient],
) -> None:
    # given: fireworks' settlement with two lines (commercial, and free individual usage)
    fireworks = client_for(host=Host.objects.get(slug="fireworks"))
    post_usage(fireworks, [record("f-3", revenue="100.00", category="individual")])
    run_billing("2026-10")
    draft = Settlement.objects.get(licensor__slug="minimax", host__slug="fireworks")
    line_ids = [str(pk) for pk in draft.lines.values_list("pk", flat=True)]
    assert len(line_ids) == 2
    base = str(live_server)
    login(page, base, reviewer.username)

    # when: the reviewer disputes both lines with a reason code from the change page
    page.goto(f"{base}/admin/billing/settlement/{draft.pk}/change/")
    page.click("#dispute-settlement")
    page.select_option("select[name=reason_code]", "quantity_contested")
    for line_id in line_ids:
        page.check(f"input[name=lines][value='{line_id}']")
    page.fill("textarea[name=reason]", "f-1 was refunded in part")
    page.fill("input[name=amount]", "636.00")
    page.click("#confirm-dispute")

    # then
    expect(page.locator(".messagelist")).to_contain_text("Disputed settlement")
    expect(page.locator("#settlement-history")).to_contain_text("quantity_contested")

    # when: the host corrects its usage and the run revises the settlement
    post_usage(fireworks, [record("f-1-fix", corrects="f-1", revenue="-5300.00")])
    run_billing("2026-10")
    page.reload()

    # then: the old settlement links to revision 2, which the reviewer opens and can approve
    expect(page.locator("#settlement-history")).to_contain_text("superseded")
    page.locator("a:visible", has_text=re.compile(r"^[0-9a-f-]{36}$")).last.click()
    expect(page.locator("#content")).to_contain_text("revision 2")
    expect(page.locator("#content")).to_contain_text("8400.00")
    expect(page.locator("#approve-settlement")).to_have_count(1)
