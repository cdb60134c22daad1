"""Fixtures for billing: a catalog imported the way operators import it, usage posted through the
REST API the way hosts post it, and the run started the way `run_billing` starts it."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from billing.models import Settlement
from ledger.testing import books_wipe
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor
from tests.smtp import Inbox, smtp_server, use_smtp

MINIMAX_RULES_PUBLIC = [
    {
        "match": {"customer_category": ["individual", "research", "nonprofit"]},
        "charge": {"type": "free"},
    }
]
COMMERCIAL_12 = [
    {
        "match": {"customer_category": ["commercial"]},
        "charge": {"type": "revenue_share", "percent": "12"},
    },
    {
        "match": {"customer_category": ["individual", "research", "nonprofit"]},
        "charge": {"type": "free"},
    },
]


def minimax_catalog(*, hosts: tuple[str, ...] = ("fireworks",)) -> dict[str, Any]:
    """docs/rating.md, worked example 1: MiniMax M2.7, free for individuals; commercial use at
    12% by per-host agreement."""
    return {
        "licensors": [{"slug": "minimax", "name": "MiniMax", "email": "billing@minimax.example"}],
        "hosts": [{"slug": h, "name": h.title(), "currency": "USD"} for h in hosts],
        "licenses": [
            {
                "slug": "minimax-m27",
                "licensor": "minimax",
                "name": "MiniMax M2.7 License",
                "versions": [
                    {
                        "version": "2026-04-15",
                        "effective_from": "2026-04-15T00:00:00Z",
                        "currency": "USD",
                        "rules": MINIMAX_RULES_PUBLIC,
                        "minimum_per_month": None,
                        "cap_per_month": None,
                        "attribution": "Built with MiniMax M2.7",
                    }
                ],
            }
        ],
        "models": [
            {
                "slug": "minimax-m2.7",
                "licensor": "minimax",
                "license": "minimax-m27",
                "aliases": ["MiniMaxAI/MiniMax-M2.7"],
                "parent": None,
            }
        ],
        "agreements": [
            {
                "host": h,
                "license": "minimax-m27",
                "version": f"{h[:2]}-2026-06",
                "effective_from": "2026-06-01T00:00:00Z",
                "currency": "USD",
                "rules": COMMERCIAL_12,
                "minimum_per_month": None,
                "cap_per_month": None,
            }
            for h in hosts
        ],
    }


def second_licensor_catalog() -> dict[str, Any]:
    """Another licensor (Kimi) whose model the same hosts serve, 5% of commercial revenue."""
    return {
        "licensors": [{"slug": "kimi", "name": "Moonshot Kimi"}],
        "licenses": [
            {
                "slug": "kimi-k25",
                "licensor": "kimi",
                "name": "Kimi K2.5 License",
                "versions": [
                    {
                        "version": "2026-01-30",
                        "effective_from": "2026-01-30T00:00:00Z",
                        "currency": "USD",
                        "rules": [
                            {
                                "match": {"customer_category": ["commercial"]},
                                "charge": {"type": "revenue_share", "percent": "5"},
                            },
                            {"charge": {"type": "free"}},
                        ],
                    }
                ],
            }
        ],
        "models": [{"slug": "kimi-k2.5", "licensor": "kimi", "license": "kimi-k25"}],
    }


@pytest.fixture
def import_catalog(db: None) -> Callable[[dict[str, Any]], None]:
    def run(data: dict[str, Any]) -> None:
        catalog_import(data)

    return run


@pytest.fixture
def minimax_world(
    import_catalog: Callable[[dict[str, Any]], None],
) -> tuple[Host, Licensor]:
    import_catalog(minimax_catalog())
    return Host.objects.get(slug="fireworks"), Licensor.objects.get(slug="minimax")


def record(
    event_id: str,
    *,
    revenue: str = "0",
    category: str = "commercial",
    at: str = "2026-10-10T12:00:00Z",
    model: str = "minimax-m2.7",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "model": model,
        "occurred_at": at,
        "customer_category": category,
        "revenue": revenue,
        **extra,
    }


def post_usage(client: APIClient, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post("/api/v1/usage", {"records": records}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["rejected"] == 0, body
    return body


def run_billing(period: str, *extra: str) -> str:
    out = io.StringIO()
    call_command("run_billing", "--period", period, *extra, stdout=out, stderr=out)
    return out.getvalue()


def settlement_of(*, licensor: str, host: str, period: str) -> Settlement:
    return Settlement.objects.get(licensor__slug=licensor, host__slug=host, period=period)


@pytest.fixture(autouse=True)
def _wipe_books_before_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """Transactional tests commit ledger entries; the flush that ends them may not TRUNCATE the
    books while they hold any (ledger_refuse_truncate)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        yield
        return
    request.getfixturevalue("transactional_db")
    yield
    books_wipe()


@pytest.fixture
def smtp_inbox(settings: Any) -> Iterator[Inbox]:
    """A real SMTP server on 127.0.0.1 that Django's email is pointed at (tests/smtp.py)."""
    for inbox in smtp_server():
        use_smtp(settings, inbox.url)
        yield inbox
