"""docs/rating.md's worked examples end to end: catalog -> POST /api/v1/usage -> run_billing ->
settlement JSON, as a licensor and a host read it."""

from __future__ import annotations

import io
from collections.abc import Callable

from django.core.management import call_command
from rest_framework.test import APIClient

from licensing.models import Agreement, Host, Licensor
from tests.billing.conftest import post_usage, record, run_billing, settlement_of


def test_it_bills_example_1_share_by_agreement(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: a month of commercial and individual usage posted by the host
    host, licensor = minimax_world
    host_client = client_for(host=host)
    post_usage(
        host_client,
        [
            record("c-1", revenue="50000.00", at="2026-10-03T10:00:00Z"),
            record("c-2", revenue="25300.00", at="2026-10-20T10:00:00Z", region="US"),
            record("i-1", revenue="4100.00", category="individual", at="2026-10-05T00:00:00Z"),
        ],
    )

    # when
    out = run_billing("2026-10")

    # then: one settlement, the worked example's numbers, exactly the JSON of docs/api.md
    settlement = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    assert str(settlement.pk) in out
    body = client_for(licensor=licensor).get(f"/api/v1/settlements/{settlement.pk}").json()
    assert set(body) == {
        "id",
        "licensor",
        "host",
        "period",
        "currency",
        "status",
        "total",
        "usage_digest",
        "terms_digest",
        "lines",
        "flags",
        "revision",
        "supersedes",
        "superseded_by",
        "review_due_at",
        "decided_by",
    }
    assert (body["revision"], body["supersedes"], body["superseded_by"]) == (1, None, None)
    assert (body["review_due_at"], body["decided_by"]) == (None, "")  # no review_days
    assert body["flags"] == []  # agreements carry no attribution; nothing went unlicensed
    assert body["licensor"] == "minimax"
    assert body["host"] == "fireworks"
    assert body["status"] == "draft"
    assert body["currency"] == "USD"
    assert body["total"] == "9036.00"
    assert body["usage_digest"].startswith("sha256:")
    lines = {(line["customer_category"], line["license_version"]): line for line in body["lines"]}
    commercial = lines[("commercial", "fi-2026-06")]
    assert commercial.pop("id") == str(settlement.lines.get(customer_category="commercial").pk)
    assert commercial == {
        "kind": "usage",
        "model": "minimax-m2.7",
        "customer_category": "commercial",
        "period": "2026-10",
        "license_version": "fi-2026-06",
        "input_tokens": 0,
        "cached_input_tokens": 0,
        "output_tokens": 0,
        "requests": 2,
        "revenue": "75300.00",
        "amount": "9036.00",
        "description": "12% of net revenue",
    }
    assert lines[("individual", "fi-2026-06")]["amount"] == "0.00"
    assert lines[("individual", "fi-2026-06")]["revenue"] == "4100.00"
    # the host sees the same settlement, read-only
    host_view = host_client.get("/api/v1/settlements?period=2026-10").json()["results"]
    assert [s["id"] for s in host_view] == [str(settlement.pk)]
    # the agreement that rated the usage is now locked
    assert Agreement.objects.get(label="fi-2026-06").locked_at is not None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_it_shows_progress_on_a_terminal_and_one_line_per_settlement(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given
    post_usage(client_for(host=minimax_world[0]), [record("c-1", revenue="100.00")])
    out = _Terminal()

    # when
    call_command("run_billing", "--period", "2026-10", stdout=out)

    # then
    text = out.getvalue()
    assert "\r  billing 2026-10: 1/1 pairs," in text
    settlement_lines = [line for line in text.splitlines() if line.startswith("minimax ")]
    assert len(settlement_lines) == 1
    assert "fireworks" in settlement_lines[0]
    assert "12.00" in settlement_lines[0]
    assert "draft" in settlement_lines[0]
