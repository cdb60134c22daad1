"""GET /api/v1/entitlements: the rule that would rate such a record for this host, in words."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from licensing.models import Host, License, Licensor
from tests.factories import (
    AgreementFactory,
    HostFactory,
    LicensedModelFactory,
    LicenseFactory,
    LicenseVersionFactory,
    ModelAliasFactory,
)

pytestmark = pytest.mark.django_db

RULES = [
    {
        "match": {"customer_category": ["commercial"], "region_in": ["CN"]},
        "charge": {"type": "per_token", "per_million": {"input": "0.03", "output": "0.12"}},
    },
    {
        "match": {"customer_category": ["commercial"]},
        "charge": {"type": "revenue_share", "percent": "12"},
    },
    {"match": {"customer_category": ["individual", "research"]}, "charge": {"type": "free"}},
]


@pytest.fixture
def license(licensor: Licensor) -> License:
    license = LicenseFactory(slug="minimax-m27", licensor=licensor)
    LicenseVersionFactory(
        license=license,
        label="2026-01-01",
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        rules=RULES,
        attribution="Built with MiniMax M2.7",
    )
    LicenseVersionFactory(
        license=license,
        label="2026-06-01",
        effective_from=datetime(2026, 6, 1, tzinfo=UTC),
        rules=[
            {
                "match": {"customer_category": ["commercial"]},
                "charge": {"type": "revenue_share", "percent": "15"},
            }
        ],
    )
    model = LicensedModelFactory(slug="minimax-m2.7", license=license, licensor=licensor)
    ModelAliasFactory(model=model, alias="MiniMaxAI/MiniMax-M2.7")
    return license


def ask(client: APIClient, **params: str) -> Any:
    return client.get("/api/v1/entitlements", {"model": "minimax-m2.7", **params})


def test_a_free_category(license: License, host_client: APIClient) -> None:
    response = ask(host_client, customer_category="research", at="2026-03-01T00:00:00Z")

    assert response.status_code == 200
    assert response.json() == {
        "model": "minimax-m2.7",
        "licensed": True,
        "terms_version": "2026-01-01",
        "charge": "free",
        "attribution": "Built with MiniMax M2.7",
        "reason": None,
    }


def test_a_region_rule_and_an_alias(license: License, host_client: APIClient) -> None:
    in_cn = ask(
        host_client,
        model="MiniMaxAI/MiniMax-M2.7",
        customer_category="commercial",
        region="CN",
        at="2026-03-01T00:00:00Z",
    ).json()
    in_us = ask(
        host_client, customer_category="commercial", region="US", at="2026-03-01T00:00:00Z"
    ).json()

    assert in_cn["model"] == "minimax-m2.7"
    assert in_cn["charge"] == "$0.03 / $0.12 per 1M input / output tokens"
    assert in_us["charge"] == "12% of net revenue"


def test_before_and_after_a_version_change(license: License, host_client: APIClient) -> None:
    before = ask(host_client, customer_category="commercial", at="2026-05-31T23:59:59Z").json()
    after = ask(host_client, customer_category="commercial", at="2026-06-01T00:00:00+00:00").json()
    too_early = ask(host_client, customer_category="commercial", at="2025-12-31T00:00:00Z").json()

    assert (before["terms_version"], before["charge"]) == ("2026-01-01", "12% of net revenue")
    assert (after["terms_version"], after["charge"]) == ("2026-06-01", "15% of net revenue")
    assert after["attribution"] is None
    assert too_early == {
        "model": "minimax-m2.7",
        "licensed": False,
        "terms_version": None,
        "charge": None,
        "attribution": None,
        "reason": "no terms of license minimax-m27 are in force at 2025-12-31T00:00:00Z",
    }


def test_unlicensed_when_no_rule_matches(license: License, host_client: APIClient) -> None:
    # the June version licenses commercial use only
    response = ask(host_client, customer_category="individual", at="2026-07-01T00:00:00Z")

    assert response.json() == {
        "model": "minimax-m2.7",
        "licensed": False,
        "terms_version": "2026-06-01",
        "charge": None,
        "attribution": None,
        "reason": "no rule of version 2026-06-01 of license minimax-m27 matches"
        " customer_category individual with no region",
    }


def test_a_commercial_category_under_an_agreement_and_never_another_hosts(
    license: License, host: Host, host_client: APIClient, client_for: Any
) -> None:
    # given an agreement of this host, and one of another host
    AgreementFactory(
        host=host,
        license=license,
        label="fw-2026-02",
        effective_from=datetime(2026, 2, 1, tzinfo=UTC),
        rules=[{"charge": {"type": "revenue_share", "percent": "8"}}],
        attribution="Powered by MiniMax",
    )
    other = HostFactory(slug="together")
    AgreementFactory(
        host=other,
        license=license,
        label="together-2026-02",
        effective_from=datetime(2026, 2, 1, tzinfo=UTC),
        rules=[{"charge": {"type": "free"}}],
    )

    mine = ask(host_client, customer_category="commercial", at="2026-03-01T00:00:00Z").json()
    public = ask(
        client_for(host=HostFactory(slug="third")),
        customer_category="commercial",
        at="2026-03-01T00:00:00Z",
    ).json()

    assert (mine["terms_version"], mine["charge"], mine["attribution"]) == (
        "fw-2026-02",
        "8% of net revenue",
        "Powered by MiniMax",
    )
    assert (public["terms_version"], public["charge"]) == ("2026-01-01", "12% of net revenue")


def test_the_hosts_default_category_and_now(
    license: License, host: Host, host_client: APIClient
) -> None:
    host.default_customer_category = "commercial"
    host.save()

    response = ask(host_client)

    assert response.json()["terms_version"] == "2026-06-01"
    assert response.json()["charge"] == "15% of net revenue"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"model": "gpt-17", "customer_category": "commercial"}, "model"),
        ({"model": "", "customer_category": "commercial"}, "model"),
        ({"customer_category": "enterprise"}, "customer_category"),
        ({}, "customer_category"),
        ({"customer_category": "commercial", "region": "XX"}, "region"),
        ({"customer_category": "commercial", "at": "tomorrow"}, "at"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(
    license: License, host_client: APIClient, params: dict[str, str], field: str
) -> None:
    response = ask(host_client, **params)

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_a_licensor_key_is_refused(license: License, licensor_client: APIClient) -> None:
    assert ask(licensor_client, customer_category="commercial").status_code == 403
