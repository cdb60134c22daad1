"""What the fault soak (bench/soak.py) loads and runs inside Django: the catalog it bills, and the
scripts it runs in `manage.py shell`, one Django start per step."""

from __future__ import annotations

from typing import Any

from bench.soak_clients import MODELS

CLIENTS = 3  # client processes, one host each


def catalog() -> dict[str, Any]:
    """Two licensors, one model each, 12% and 5% of commercial revenue, individuals free; three
    hosts whose events default to commercial."""
    licensors = [("alpha", "12", MODELS[0]), ("beta", "5", MODELS[1])]
    return {
        "licensors": [{"slug": s, "name": s.title()} for s, _, _ in licensors],
        "hosts": [
            {
                "slug": f"soak-host-{i}",
                "name": f"Soak host {i}",
                "currency": "USD",
                "default_customer_category": "commercial",
            }
            for i in range(CLIENTS)
        ],
        "licenses": [
            {
                "slug": f"{s}-license",
                "licensor": s,
                "name": f"{s.title()} License",
                "versions": [
                    {
                        "version": "v1",
                        "effective_from": "2020-01-01T00:00:00Z",
                        "currency": "USD",
                        "rules": [
                            {
                                "match": {"customer_category": ["commercial"]},
                                "charge": {"type": "revenue_share", "percent": pct},
                            },
                            {"charge": {"type": "free"}},
                        ],
                    }
                ],
            }
            for s, pct, _ in licensors
        ],
        "models": [{"slug": m, "licensor": s, "license": f"{s}-license"} for s, _, m in licensors],
    }


# Run in one `manage.py shell` per step (a Django start costs seconds on a loaded machine): the
# step's last line of output is its result, in JSON.
SETUP = """
import json
from licensing.catalog import catalog_import
from licensing.models import Host
from licensing.services import api_key_create
catalog_import(json.loads(%(catalog)r))
hosts = Host.objects.filter(slug__startswith="soak-host-").order_by("slug")
print(json.dumps([api_key_create(host=h).key for h in hosts]))
"""
STEPS = """
import io, json
from django.core.management import call_command
from billing.models import Settlement
from billing.review import settlement_approve

def command(*args):
    out = io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=out)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        out.write(repr(exc))
        code = 1
    return {"code": code, "out": out.getvalue()}

def approve(period):
    n = 0
    for s in Settlement.objects.filter(period=period, status="draft").order_by("id"):
        settlement_approve(settlement=s, actor="soak")
        n += 1
    return n
"""
# The soak's books: approve what the last run wrote, then verify the ledger and the settlements.
VERIFY = (
    STEPS
    + """
approved = approve(%(period)r)
print(json.dumps({"approved": approved, "verify_ledger": command("verify_ledger"),
                  "verify": command("run_billing", "--verify", "--period", %(period)r)}))
"""
)
# The clean run: `run_billing` over the copied records, then the same approvals.
CLEAN = (
    STEPS
    + """
run = command("run_billing", "--period", %(period)r)
print(json.dumps({"run": run, "approved": approve(%(period)r)}))
"""
)
