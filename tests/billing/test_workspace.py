"""The licensor's workspace in the admin (billing/workspace.py, billing/site.py): a reviewer's home
page, a settlement as a statement, the usage behind a line and the CSV and kit downloads, with a
number of queries that does not grow with the number of lines, hosts and months."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from billing.demo import licensor_reviewer_permissions
from billing.models import Settlement
from billing.workspace import days_left, money
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor, LicensorMembership
from tests.billing.conftest import (
    minimax_catalog,
    post_usage,
    record,
    run_billing,
    second_licensor_catalog,
    settlement_of,
)

pytestmark = pytest.mark.django_db

HOSTS = ("fireworks", "together", "nebius")
MONTHS = ("2026-08", "2026-09", "2026-10")


def reviewer_of(slug: str) -> Client:
    user = User.objects.create_user(f"{slug}-reviewer", password="pw", is_staff=True)
    LicensorMembership.objects.create(user=user, licensor=Licensor.objects.get(slug=slug))
    user.user_permissions.add(*licensor_reviewer_permissions())
    client = Client()
    client.force_login(user)
    return client


def seed(
    client_for: Callable[..., APIClient], *, hosts: tuple[str, ...], months: tuple[str, ...]
) -> None:
    """MiniMax's usage at each host in each month: commercial (12%) and individual (free), so
    two lines per settlement; revenue grows by 100.00 a month."""
    catalog_import(minimax_catalog(hosts=hosts))
    catalog_import(second_licensor_catalog())
    for h in hosts:
        client = client_for(host=Host.objects.get(slug=h))
        for i, month in enumerate(months):
            at = f"{month}-10T12:00:00Z"
            post_usage(
                client,
                [
                    record(
                        f"{h}-{month}-c",
                        revenue=f"{1000 + 100 * i}.00",
                        at=at,
                        input_tokens=1234567,
                        region="US",
                    ),
                    record(f"{h}-{month}-i", revenue="5.00", at=at, category="individual"),
                    record(f"{h}-{month}-k", revenue="10.00", at=at, model="kimi-k2.5"),
                ],
            )
    for month in months:
        run_billing(month)


def test_money_has_thousands_separators_and_the_currencys_minor_unit() -> None:
    from decimal import Decimal

    assert money(Decimal("1234567.5"), "USD") == "1,234,567.50"
    assert money(Decimal("1234567.5"), "JPY") == "1,234,568"
    assert money(Decimal("-1234.5678"), "KWD") == "-1,234.568"


def test_days_left_before_deemed_acceptance_count_whole_days() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
    assert days_left(now + timedelta(days=2, hours=23), now) == 2
    assert days_left(now + timedelta(hours=5), now) == 0
    assert days_left(now - timedelta(hours=1), now) == -1
    assert days_left(None, now) is None


def test_it_shows_a_reviewer_their_home_page_with_drafts_and_charts(
    client_for: Callable[..., APIClient],
) -> None:
    # given
    seed(client_for, hosts=("fireworks", "together"), months=("2026-09", "2026-10"))

    # when
    page = reviewer_of("minimax").get("/admin/")

    # then: four drafts await review; the charts and the monthly figures are there
    assert page.status_code == 200
    text = page.content.decode()
    assert text.count('class="tg-awaiting"') == 4
    assert text.count('<svg class="tg-chart"') == 2  # by host and by model, in USD
    # September: 2 hosts x 12% of 1000.00; October: 2 x 12% of 1100.00
    assert 'data-period="2026-09" data-amount="240.00"' in text
    assert 'data-period="2026-10" data-amount="264.00"' in text
    assert "504.00 USD" in text  # the 12 months' total
    assert "Together" in text and "minimax-m2.7" in text
    assert "kimi" not in text.lower()  # Kimi's usage at the same hosts is Kimi's


def test_an_operator_keeps_the_stock_index_with_a_link(
    client_for: Callable[..., APIClient],
) -> None:
    seed(client_for, hosts=("fireworks",), months=("2026-10",))
    operator = Client()
    operator.force_login(User.objects.create_superuser("op", "op@example.com", "pw"))

    page = operator.get("/admin/")

    assert page.status_code == 200
    assert b"Settlements awaiting review" in page.content
    assert b"Site administration" not in page.content  # branded
    assert b"Tollgate" in page.content
    assert b'id="app-list"' in page.content or b"app-billing" in page.content


def test_the_settlement_page_is_a_statement_with_last_months_change(
    client_for: Callable[..., APIClient],
) -> None:
    # given
    seed(client_for, hosts=("fireworks",), months=("2026-09", "2026-10"))
    october = settlement_of(licensor="minimax", host="fireworks", period="2026-10")

    # when
    page = reviewer_of("minimax").get(f"/admin/billing/settlement/{october.pk}/change/")

    # then: thousands separators, the previous month's amount and the change
    assert page.status_code == 200
    text = page.content.decode()
    assert "1,234,567" in text  # input tokens
    assert "1,100.00" in text  # revenue
    assert "132.00" in text and "120.00" in text and "+12.00<br><small>+10.0%" in text
    assert october.usage_digest in text and october.terms_digest in text
    assert f"/admin/billing/settlement/{october.pk}/statement.csv" in text
    assert f"/admin/billing/settlement/{october.pk}/kit.zip" in text  # the session, not a key
    assert text.count('class="tg-drill"') == 2  # both usage lines drill down


def test_the_drill_down_shows_a_lines_records_grouped_then_paginated(
    client_for: Callable[..., APIClient],
) -> None:
    # given
    seed(client_for, hosts=("fireworks",), months=("2026-10",))
    october = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    line = october.lines.get(customer_category="commercial")

    # when
    page = reviewer_of("minimax").get(
        f"/admin/billing/settlement/{october.pk}/lines/{line.pk}/usage/"
    )

    # then: the one commercial record of MiniMax at Fireworks, none of the others
    assert page.status_code == 200
    text = page.content.decode()
    assert "fireworks-2026-10-c" in text
    assert "fireworks-2026-10-i" not in text and "fireworks-2026-10-k" not in text
    assert "2026-10-10" in text and "1,234,567" in text and "1,000.00" in text
    assert "Records (1)" in text


def test_the_drill_down_refuses_a_line_of_another_settlement(
    client_for: Callable[..., APIClient],
) -> None:
    seed(client_for, hosts=("fireworks",), months=("2026-09", "2026-10"))
    october = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    september = settlement_of(licensor="minimax", host="fireworks", period="2026-09")
    line = september.lines.first()
    assert line is not None

    page = reviewer_of("minimax").get(
        f"/admin/billing/settlement/{october.pk}/lines/{line.pk}/usage/"
    )

    assert page.status_code == 404


def test_the_admin_csv_is_the_apis_statement(client_for: Callable[..., APIClient]) -> None:
    # given
    seed(client_for, hosts=("fireworks",), months=("2026-10",))
    october = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    api = client_for(licensor=Licensor.objects.get(slug="minimax"))

    # when
    admin_csv = reviewer_of("minimax").get(f"/admin/billing/settlement/{october.pk}/statement.csv")
    api_csv = api.get(f"/api/v1/settlements/{october.pk}/statement.csv")

    # then
    assert admin_csv.status_code == 200
    assert admin_csv["Content-Type"] == "text/csv; charset=utf-8"
    assert admin_csv.content == api_csv.content
    assert "attachment" in admin_csv["Content-Disposition"]


def test_a_reviewer_downloads_the_apis_kit_and_it_verifies(
    client_for: Callable[..., APIClient], tmp_path: Path
) -> None:
    # given
    seed(client_for, hosts=("fireworks",), months=("2026-10",))
    october = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    api = client_for(licensor=Licensor.objects.get(slug="minimax"))

    # when: the reviewer, logged in with no API key, downloads the kit
    response = reviewer_of("minimax").get(f"/admin/billing/settlement/{october.pk}/kit.zip")

    # then: a zip attachment that verify_kit accepts (commercial 12% of 1,000.00 and the free
    # individual line), with the API kit's files
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == (
        'attachment; filename="kit-minimax-fireworks-2026-10-USD.zip"'
    )
    kit = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    path = tmp_path / "kit.zip"
    path.write_bytes(kit)
    out = io.StringIO()
    call_command("verify_kit", str(path), stdout=out)
    assert out.getvalue().strip() == "kit verified: 2 lines, total 120.00 USD"
    api_kit = b"".join(api.get(f"/api/v1/settlements/{october.pk}/kit").streaming_content)  # type: ignore[attr-defined]
    with zipfile.ZipFile(io.BytesIO(kit)) as ours, zipfile.ZipFile(io.BytesIO(api_kit)) as theirs:
        assert ours.namelist() == theirs.namelist()
        assert ours.read("settlement.json") == theirs.read("settlement.json")
        assert ours.read("usage.ndjson") == theirs.read("usage.ndjson")


def test_another_licensors_reviewer_gets_404_for_the_kit(
    client_for: Callable[..., APIClient],
) -> None:
    seed(client_for, hosts=("fireworks",), months=("2026-10",))
    october = settlement_of(licensor="minimax", host="fireworks", period="2026-10")

    response = reviewer_of("kimi").get(f"/admin/billing/settlement/{october.pk}/kit.zip")

    assert response.status_code == 404
    assert not response.streaming


def test_the_model_filter_lists_only_the_reviewers_models(
    client_for: Callable[..., APIClient],
) -> None:
    seed(client_for, hosts=("fireworks",), months=("2026-10",))

    page = reviewer_of("minimax").get("/admin/billing/settlement/?model=minimax-m2.7")
    kimi_page = reviewer_of("kimi").get("/admin/billing/settlement/")

    assert page.status_code == 200
    assert b"?model=minimax-m2.7" in page.content
    assert b"minimax-m2.7" not in kimi_page.content
    assert b"?model=kimi-k2.5" in kimi_page.content


def _queries(client: Client, url: str) -> int:
    ContentType.objects.clear_cache()  # a per-process cache: the first page in a run fills it
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(captured)


@pytest.mark.parametrize(
    ("hosts", "months"), [(HOSTS[:1], MONTHS[-1:]), (HOSTS, MONTHS)], ids=["small", "large"]
)
def test_the_home_and_statement_pages_run_a_fixed_number_of_queries(
    client_for: Callable[..., APIClient], hosts: tuple[str, ...], months: tuple[str, ...]
) -> None:
    # given: 1 host and 1 month, or 3 hosts and 3 months (3 times the lines, 9 the settlements)
    seed(client_for, hosts=hosts, months=months)
    reviewer = reviewer_of("minimax")
    latest = Settlement.objects.filter(licensor__slug="minimax", period="2026-10").first()
    assert latest is not None
    line = latest.lines.first()
    assert line is not None

    # then: the same literal counts at both sizes
    assert _queries(reviewer, "/admin/") == HOME_QUERIES
    assert _queries(reviewer, f"/admin/billing/settlement/{latest.pk}/change/") == PAGE_QUERIES
    usage = f"/admin/billing/settlement/{latest.pk}/lines/{line.pk}/usage/"
    assert _queries(reviewer, usage) == USAGE_QUERIES


HOME_QUERIES = 10
# The statement page also reads the settlement's history and the revision that superseded it.
PAGE_QUERIES = 12
USAGE_QUERIES = 10
