"""Building approved settlements for the Stripe tests, the way users make them: a catalog
imported, usage posted through the REST API, the run, the licensor's approval."""

from __future__ import annotations

import json
from typing import Any

import stripe
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from billing import stripe_gateway
from billing.models import Settlement
from billing.review import settlement_approve
from licensing.catalog import catalog_import
from licensing.models import Host
from licensing.services import api_key_create
from tests.billing.conftest import minimax_catalog, post_usage, record, run_billing, settlement_of


def jpy_catalog() -> dict[str, Any]:
    """The MiniMax catalog in yen: a currency without minor units."""
    data: dict[str, Any] = json.loads(json.dumps(minimax_catalog()).replace('"USD"', '"JPY"'))
    return data


def billed_settlement(
    *, revenue: str, category: str = "commercial", catalog: dict[str, Any] | None = None
) -> Settlement:
    """A draft settlement of fireworks for 2026-10: 12% of `revenue` for commercial usage."""
    catalog_import(catalog or minimax_catalog())
    host = Host.objects.get(slug="fireworks")
    Host.objects.filter(pk=host.pk).update(email="billing@fireworks.example")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(host=host).key}")
    post_usage(client, [record("c-1", revenue=revenue, category=category)])
    run_billing("2026-10")
    return settlement_of(licensor="minimax", host="fireworks", period="2026-10")


def approve_without_invoicing(settlement: Settlement) -> Settlement:
    """Approved as when Stripe is not configured: nothing is queued."""
    with override_settings(STRIPE_API_KEY=""):
        return settlement_approve(settlement=settlement, actor="test")


def stripe_invoices(customer_id: str) -> list[dict[str, Any]]:
    """Every invoice Stripe holds for the customer, as plain data."""
    api = stripe_gateway.client()
    return [i.to_dict() for i in api.v1.invoices.list({"customer": customer_id}).data]


def stripe_customers() -> list[Any]:
    return list(stripe_gateway.client().v1.customers.list().data)


def api() -> stripe.StripeClient:
    assert settings.STRIPE_API_KEY
    return stripe_gateway.client()
