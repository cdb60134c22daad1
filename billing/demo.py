"""The demo world of `make demo` (`manage.py seed_demo`), modelled on the worked examples
of docs/rating.md:
MiniMax M2.7 (free for personal, research and non-profit use; commercial hosting under per-host
agreements), Kimi K2.5, DeepSeek V3, a Falcon-style yearly threshold license, and three hosts in
two currencies. Idempotent: running it again changes nothing.

The demo's API keys are derived from a fixed seed so that every run prints the same keys; they
are demo keys, not secrets. Real keys come from `create_api_key` (32 random bytes).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.db import transaction

from licensing.auth import HOST_PREFIX, LICENSOR_PREFIX
from licensing.catalog import ImportReport, catalog_import
from licensing.models import Host, Licensor, LicensorMembership
from licensing.selectors import licensor_reviewer_permissions
from licensing.services import api_key_store

if TYPE_CHECKING:
    from billing.models import Settlement

CATALOG = Path(__file__).resolve().parent.parent / "licensing" / "fixtures" / "demo_catalog.json"
DEMO_PASSWORD = "tollgate-demo"  # noqa: S105 - demo logins only, printed by seed_demo


@dataclass
class DemoWorld:
    report: ImportReport
    host_keys: dict[str, str] = field(default_factory=dict)
    licensor_keys: dict[str, str] = field(default_factory=dict)
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # (user, password, role)


def demo_key(prefix: str, slug: str) -> str:
    digest = hashlib.sha256(f"tollgate-demo:{prefix}:{slug}".encode()).digest()  # 32 bytes
    return prefix + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def demo_seed() -> DemoWorld:
    with transaction.atomic():
        report = catalog_import(json.loads(CATALOG.read_text()))
        world = DemoWorld(report=report)
        for host in Host.objects.order_by("slug"):
            key = demo_key(HOST_PREFIX, host.slug)
            api_key_store(key=key, host=host, name="demo")
            world.host_keys[host.slug] = key
        for licensor in Licensor.objects.order_by("slug"):
            key = demo_key(LICENSOR_PREFIX, licensor.slug)
            api_key_store(key=key, licensor=licensor, name="demo")
            world.licensor_keys[licensor.slug] = key

        admin, created = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(DEMO_PASSWORD)
            admin.save()
        world.logins.append(("admin", DEMO_PASSWORD, "operator (superuser)"))

        minimax = Licensor.objects.get(slug="minimax")
        reviewer, created = User.objects.get_or_create(
            username="minimax", defaults={"is_staff": True, "email": minimax.email}
        )
        if created:
            reviewer.set_password(DEMO_PASSWORD)
            reviewer.save()
        LicensorMembership.objects.get_or_create(user=reviewer, defaults={"licensor": minimax})
        reviewer.user_permissions.add(*licensor_reviewer_permissions())
        world.logins.append(("minimax", DEMO_PASSWORD, "MiniMax's settlement reviewer"))
    return world


# --- a month of demo usage -----------------------------------------------------------------

# (host, model as the host names it, category, region, currency or None for the host's, weight)
_DEMO_TRAFFIC: list[tuple[str, str, str, str | None, str | None, int]] = [
    ("fireworks", "MiniMaxAI/MiniMax-M2.7", "commercial", "US", None, 40),
    ("fireworks", "minimax-m2.7", "individual", "DE", None, 15),
    ("fireworks", "minimax-m2.7-fp8", "commercial", "JP", None, 10),
    ("fireworks", "deepseek-ai/DeepSeek-V3", "commercial", "US", None, 20),
    ("fireworks", "falcon-180b", "commercial", "AE", None, 15),
    ("together", "minimax/minimax-m2.7", "commercial", "US", None, 45),
    ("together", "minimax/minimax-m2.7", "research", "GB", None, 10),
    ("together", "moonshotai/Kimi-K2.5", "commercial", "SG", None, 30),
    ("together", "kimi-k2.5", "nonprofit", "KE", None, 15),
    ("nebius", "minimax-m2.7", "commercial", "FR", None, 35),
    ("nebius", "minimax-m2.7", "commercial", "US", None, 10),
    ("nebius", "deepseek-v3", "commercial", "NL", None, 30),
    ("nebius", "kimi-k2.5", "commercial", "DE", "USD", 25),
]


def demo_usage(period: str, *, records_per_host: int = 2000) -> dict[str, list[dict[str, Any]]]:
    """A month of usage per host, as the JSON records a host would POST. Deterministic: the
    same period gives the same records (and event ids), so posting twice stores them once."""
    year, month = (int(p) for p in period.split("-"))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    seconds = int((end - start).total_seconds())
    rng = random.Random(f"tollgate-demo-{period}")  # noqa: S311 - demo data, not security
    out: dict[str, list[dict[str, Any]]] = {}
    for host in sorted({t[0] for t in _DEMO_TRAFFIC}):
        traffic = [t for t in _DEMO_TRAFFIC if t[0] == host]
        weights = [t[5] for t in traffic]
        records = []
        for n in range(records_per_host):
            _, model, category, region, currency, _ = rng.choices(traffic, weights)[0]
            input_tokens = rng.randint(200_000, 40_000_000)
            cached = rng.randint(0, input_tokens // 3)
            output = rng.randint(50_000, 8_000_000)
            # Net revenue: about $1.20 per million input and $4.80 per million output tokens.
            cents = (input_tokens * 120 + output * 480) // 1_000_000
            record: dict[str, Any] = {
                "event_id": f"demo-{host}-{period}-{n:06d}",
                "model": model,
                "occurred_at": (start + timedelta(seconds=rng.randrange(seconds)))
                .isoformat()
                .replace("+00:00", "Z"),
                "customer_category": category,
                "input_tokens": input_tokens,
                "cached_input_tokens": cached,
                "output_tokens": output,
                "requests": rng.randint(1, 400),
                "revenue": f"{cents // 100}.{cents % 100:02d}",
                "region": region,
            }
            if currency:
                record["currency"] = currency
            records.append(record)
        out[host] = records
    return out


@dataclass
class PostedUsage:
    host: str
    accepted: int
    duplicates: int
    rejected: int


def demo_post_usage(
    world: DemoWorld, period: str, *, batch_size: int = 5000, records_per_host: int = 2000
) -> list[PostedUsage]:
    """POST the demo month to /api/v1/usage with each host's key, through the whole HTTP stack
    (middleware, authentication, throttling, parsing) in-process: the server is not up yet."""
    from django.test import Client

    client = Client()
    posted = []
    for host, records in demo_usage(period, records_per_host=records_per_host).items():
        totals = PostedUsage(host, 0, 0, 0)
        for start in range(0, len(records), batch_size):
            response = client.post(
                "/api/v1/usage",
                data=json.dumps({"records": records[start : start + batch_size]}),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {world.host_keys[host]}",
            )
            if response.status_code != 200:
                raise RuntimeError(
                    f"posting {host}'s usage: {response.status_code} {response.content!r}"
                )
            body = response.json()
            totals.accepted += body["accepted"]
            totals.duplicates += body["duplicates"]
            totals.rejected += body["rejected"]
        posted.append(totals)
    return posted


def demo_approve(period: str) -> Settlement | None:
    """Approve MiniMax's Fireworks settlement, as its reviewer would, so the demo's ledger holds
    an accrual; the other drafts are left for the reviewer to approve or dispute in the admin."""
    from billing.models import Settlement
    from billing.review import settlement_approve

    settlement = Settlement.objects.filter(
        period=period, licensor__slug="minimax", host__slug="fireworks"
    ).first()
    if settlement is None:
        return None
    if settlement.status == "draft":
        settlement = settlement_approve(settlement=settlement, actor="demo")
    return settlement


def demo_history(world: DemoWorld, period: str, months: int) -> list[tuple[str, int, int]]:
    """The `months` before `period`, so the workspace's charts have a shape: each month's usage
    (growing towards `period`: a sixth of its records per host for the oldest, more each month
    after), billed, and every settlement of it approved as if its licensor had reviewed it.
    Returns (period, records posted, settlements approved) per month. Idempotent, like the rest."""
    import io

    from django.core.management import call_command

    from billing.models import Settlement
    from billing.review import settlement_approve
    from core.periods import add_months, period_parse

    out = []
    year, month = period_parse(period)
    for back in range(months, 0, -1):
        y, m = add_months(year, month, -back)
        earlier = f"{y:04d}-{m:02d}"
        size = 2000 * (months + 1 - back) // (months + 1)
        posted = demo_post_usage(world, earlier, records_per_host=size)
        call_command("run_billing", period=earlier, stdout=io.StringIO(), stderr=io.StringIO())
        approved = 0
        for s in Settlement.objects.filter(period=earlier, status="draft").order_by("pk"):
            settlement_approve(settlement=s, actor="demo")
            approved += 1
        out.append((earlier, sum(p.accepted + p.duplicates for p in posted), approved))
    return out
