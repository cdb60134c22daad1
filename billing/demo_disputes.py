"""The demo's dispute and its revision (docs/billing.md, "Review, disputes and their
resolution"), through the real services: MiniMax's reviewer disputes Nebius's settlement of the
demo month ("missing usage"), Nebius posts the records its gateway had not sent, through the REST
API, and the billing run comes round: revision 2 supersedes the disputed settlement, a draft for
the reviewer to decide in the workspace. Idempotent: a month already revised is left as it is.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from django.core.management import call_command

from billing.demo import DemoWorld
from billing.models import Settlement, SettlementStatus
from billing.review import settlement_dispute
from core.periods import period_bounds

DISPUTED_HOST = "nebius"
DISPUTE_REASON = (
    "Our gateway logs show about 60 more commercial requests from France in the last three days "
    "of the month than this settlement counts."
)
MISSED_RECORDS = 60


@dataclass
class DisputeStory:
    disputed: Settlement
    revision: Settlement | None


def missed_usage(period: str) -> list[dict[str, Any]]:
    """The records Nebius had not sent: its last three days' commercial MiniMax traffic from
    France. Deterministic, so that posting them again stores them once."""
    _, end = period_bounds(period)
    rng = random.Random(f"tollgate-demo-missed-{period}")  # noqa: S311 - demo data
    records = []
    for n in range(MISSED_RECORDS):
        input_tokens = rng.randint(2_000_000, 40_000_000)
        output = rng.randint(500_000, 8_000_000)
        cents = (input_tokens * 120 + output * 480) // 1_000_000  # as billing/demo.py's traffic
        at = end - timedelta(seconds=rng.randrange(3 * 86_400) + 1)
        records.append(
            {
                "event_id": f"demo-{DISPUTED_HOST}-{period}-missed-{n:03d}",
                "model": "minimax-m2.7",
                "occurred_at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "customer_category": "commercial",
                "input_tokens": input_tokens,
                "output_tokens": output,
                "requests": rng.randint(1, 400),
                "revenue": f"{cents // 100}.{cents % 100:02d}",
                "region": "FR",
            }
        )
    return records


def demo_dispute_and_revision(world: DemoWorld, period: str) -> DisputeStory | None:
    """Dispute, corrected usage and the run's revision; None when the demo month has no
    MiniMax settlement with Nebius."""
    from django.test import Client

    first = Settlement.objects.filter(
        period=period, licensor__slug="minimax", host__slug=DISPUTED_HOST, revision=1
    ).first()
    if first is None:
        return None
    if first.status == SettlementStatus.DRAFT:
        # As the reviewer does it from the settlement page (billing/admin.py's actor).
        first = settlement_dispute(
            settlement=first,
            reason=DISPUTE_REASON,
            reason_code="missing_usage",
            actor="admin:minimax",
        )
    if first.status == SettlementStatus.DISPUTED:
        response = Client().post(
            "/api/v1/usage",
            data=json.dumps({"records": missed_usage(period)}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {world.host_keys[DISPUTED_HOST]}",
        )
        if response.status_code != 200 or response.json()["rejected"]:
            raise RuntimeError(f"posting Nebius's missed usage: {response.content!r}")
        call_command("run_billing", period=period, stdout=io.StringIO(), stderr=io.StringIO())
        first.refresh_from_db()
    revision = Settlement.objects.filter(supersedes=first).first()
    return DisputeStory(disputed=first, revision=revision)


__all__ = ["DisputeStory", "demo_dispute_and_revision", "missed_usage"]
