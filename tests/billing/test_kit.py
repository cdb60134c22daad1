"""The verification kit: fetched through the API, verified offline by `verify_kit` (also with the
database unreachable), and a tampered record caught (docs/verification.md)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from billing.review import settlement_approve
from licensing.models import Host, Licensor
from tests.billing.conftest import (
    minimax_catalog,
    post_usage,
    record,
    run_billing,
    settlement_of,
)

ROOT = Path(__file__).resolve().parents[2]


def fetch_kit(client: APIClient, settlement_id: object) -> bytes:
    response = client.get(f"/api/v1/settlements/{settlement_id}/kit")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/zip"
    assert response.streaming
    return b"".join(response.streaming_content)  # type: ignore[attr-defined]


def verify(path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_kit", str(path), stdout=out, stderr=err)
    except CommandError as exc:
        return 1, err.getvalue() + str(exc)
    return 0, out.getvalue()


def rewrite(kit: bytes, name: str, edit: Callable[[bytes], bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(kit)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info.filename, edit(data) if info.filename == name else data)
    return out.getvalue()


@pytest.fixture
def october(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> tuple[APIClient, APIClient, object]:
    host, licensor = minimax_world
    hc = client_for(host=host)
    post_usage(
        hc,
        [
            record("c-1", revenue="75000.00", region="US", customer_ref="acme-secret"),
            record("c-2", revenue="300.00", at="2026-10-20T08:00:00Z"),
            record("i-1", category="individual", input_tokens=1000, output_tokens=50),
            record("c-1-fix", revenue="-100.00", corrects="c-1", region="US"),
        ],
    )
    run_billing("2026-10")
    s = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    return client_for(licensor=licensor), hc, s.pk


def test_it_verifies_a_fetched_kit(
    october: tuple[APIClient, APIClient, object], tmp_path: Path
) -> None:
    # given: October's settlement, fetched by its licensor
    lc, hc, pk = october
    kit = fetch_kit(lc, pk)
    path = tmp_path / "kit.zip"
    path.write_bytes(kit)

    # when: verified
    code, out = verify(path)

    # then: it holds, and the kit has the files and records of the contract, no customer_ref
    assert code == 0, out
    assert out.strip() == "kit verified: 2 lines, total 9024.00 USD"
    with zipfile.ZipFile(path) as zf:
        assert {"settlement.json", "terms.json", "usage.ndjson", "README.md"} <= set(zf.namelist())
        records = [json.loads(x) for x in zf.read("usage.ndjson").splitlines()]
        terms = json.loads(zf.read("terms.json"))
    assert [r["event_id"] for r in records] == ["c-1", "i-1", "c-1-fix", "c-2"]
    assert records[2]["corrects"] == "c-1"
    assert records[2]["revenue"] == "-100.000000"
    assert all("customer_ref" not in r for r in records)
    assert set(records[0]) == {
        "event_id",
        "model",
        "occurred_at",
        "customer_category",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "requests",
        "revenue",
        "currency",
        "region",
        "corrects",
    }
    # (the agreement rated all of it: the license's own version rated nothing)
    assert [(lic["slug"], lic["versions"]) for lic in terms["licenses"]] == [("minimax-m27", [])]
    assert [a["version"] for a in terms["agreements"]] == ["fi-2026-06"]
    # and the host gets the same kit
    assert fetch_kit(hc, pk) == kit


def test_an_altered_record_fails_naming_the_digest_and_line(
    october: tuple[APIClient, APIClient, object], tmp_path: Path
) -> None:
    # given: a kit whose record c-2 claims $200 more revenue
    lc, _, pk = october
    kit = rewrite(
        fetch_kit(lc, pk),
        "usage.ndjson",
        lambda data: data.replace(b'"revenue": "300.000000"', b'"revenue": "500.000000"'),
    )
    path = tmp_path / "kit.zip"
    path.write_bytes(kit)

    # when / then: exit 1, naming the usage digest first, then the line it changes
    code, out = verify(path)
    assert code == 1
    assert out.splitlines()[0].startswith("usage_digest differs")
    assert "line 1 (usage minimax-m2.7 commercial 2026-10 fi-2026-06): input_tokens" not in out
    assert "line 1 (usage minimax-m2.7 commercial 2026-10 fi-2026-06): revenue is 75200" in out


def test_an_altered_line_amount_fails_naming_the_line(
    october: tuple[APIClient, APIClient, object], tmp_path: Path
) -> None:
    lc, _, pk = october

    def edit(data: bytes) -> bytes:
        s = json.loads(data)
        s["lines"][0]["amount"] = "9000.00"
        return json.dumps(s).encode()

    path = tmp_path / "kit.zip"
    path.write_bytes(rewrite(fetch_kit(lc, pk), "settlement.json", edit))
    code, out = verify(path)
    assert code == 1
    assert out.splitlines()[0] == (
        "line 1 (usage minimax-m2.7 commercial 2026-10 fi-2026-06): amount is 9000.00 in "
        "settlement.json, 9024.00 recomputed"
    )


def test_a_kit_with_an_adjustment_line_verifies(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient], tmp_path: Path
) -> None:
    # given: October approved, then late October usage billed as November's adjustment
    host, licensor = minimax_world
    hc = client_for(host=host)
    post_usage(hc, [record("oct-1", revenue="75300.00")])
    run_billing("2026-10")
    settlement_approve(
        settlement=settlement_of(licensor="minimax", host="fireworks", period="2026-10"),
        actor="test",
    )
    post_usage(
        hc,
        [
            record("oct-late", revenue="500.00", at="2026-10-28T09:00:00Z"),
            record("nov-1", revenue="1000.00", at="2026-11-02T09:00:00Z"),
        ],
    )
    run_billing("2026-11")
    november = settlement_of(licensor="minimax", host="fireworks", period="2026-11")
    path = tmp_path / "kit.zip"
    path.write_bytes(fetch_kit(client_for(licensor=licensor), november.pk))

    # when / then
    assert verify(path) == (0, "kit verified: 2 lines, total 180.00 USD\n")


def test_another_tenant_gets_404(
    october: tuple[APIClient, APIClient, object], client_for: Callable[..., APIClient]
) -> None:
    _, _, pk = october
    other = client_for(licensor=Licensor.objects.create(slug="other", name="Other"))
    assert other.get(f"/api/v1/settlements/{pk}/kit").status_code == 404


def test_verify_kit_runs_with_the_database_unreachable(
    october: tuple[APIClient, APIClient, object], tmp_path: Path
) -> None:
    # given: a fetched kit, and a DATABASE_URL whose port nothing listens on
    lc, _, pk = october
    path = tmp_path / "kit.zip"
    path.write_bytes(fetch_kit(lc, pk))
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:9/nowhere",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "true",
    }

    # when: verify_kit runs in its own process
    done = subprocess.run(
        [sys.executable, "manage.py", "verify_kit", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # then: it verifies the kit all the same
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "kit verified: 2 lines, total 9024.00 USD"


def test_a_kit_of_a_license_with_a_threshold_verifies(
    import_catalog: Callable[[dict[str, Any]], None],
    client_for: Callable[..., APIClient],
    tmp_path: Path,
) -> None:
    # given: 10% of commercial revenue above $1,000 a month, records below, across and above the
    # threshold, and a correction of the crossing one
    catalog = minimax_catalog()
    catalog["agreements"][0]["rules"] = [
        {
            "match": {"customer_category": ["commercial"]},
            "charge": {
                "type": "revenue_share",
                "percent": "10",
                "above": {"metric": "revenue", "window": "month", "amount": "1000"},
            },
        }
    ]
    import_catalog(catalog)
    host = Host.objects.get(slug="fireworks")
    hc = client_for(host=host)
    post_usage(
        hc,
        [
            record("a", revenue="600.00", at="2026-10-01T00:00:00Z"),
            record("b", revenue="700.00", at="2026-10-02T00:00:00Z"),
            record("c", revenue="400.00", at="2026-10-03T00:00:00Z"),
            record("b-fix", revenue="-100.00", at="2026-10-02T00:00:00Z", corrects="b"),
        ],
    )
    run_billing("2026-10")
    s = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    assert s.total == Decimal("60.00")  # (600 + 600 + 400 - 1000) x 10%
    path = tmp_path / "kit.zip"
    path.write_bytes(fetch_kit(client_for(licensor=s.licensor), s.pk))

    # when / then
    assert verify(path) == (0, "kit verified: 1 lines, total 60.00 USD\n")


def test_a_kit_of_two_licenses_with_a_fine_tune_and_unlicensed_usage_verifies(
    import_catalog: Callable[[dict[str, Any]], None],
    client_for: Callable[..., APIClient],
    tmp_path: Path,
) -> None:
    # given: a second MiniMax license in force from 15 October, a fine-tune rated under it, and
    # usage of it before its terms were in force (unlicensed)
    catalog = minimax_catalog()
    catalog["licenses"].append(
        {
            "slug": "minimax-vl",
            "licensor": "minimax",
            "name": "MiniMax VL License",
            "versions": [
                {
                    "version": "vl-1",
                    "effective_from": "2026-10-15T00:00:00Z",
                    "currency": "USD",
                    "rules": [{"charge": {"type": "revenue_share", "percent": "10"}}],
                }
            ],
        }
    )
    catalog["models"] += [
        {"slug": "minimax-vl", "licensor": "minimax", "license": "minimax-vl"},
        {"slug": "minimax-vl-ft", "licensor": "minimax", "parent": "minimax-vl"},
    ]
    import_catalog(catalog)
    hc = client_for(host=Host.objects.get(slug="fireworks"))
    post_usage(
        hc,
        [
            record("m-1", revenue="1000.00"),
            record("vl-early", revenue="100.00", model="minimax-vl", at="2026-10-10T00:00:00Z"),
            record("vl-ft", revenue="1000.00", model="minimax-vl-ft", at="2026-10-20T00:00:00Z"),
        ],
    )
    run_billing("2026-10")
    s = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    assert s.total == Decimal("220.00")
    assert [f["kind"] for f in s.flags if f["kind"] == "unlicensed"] == ["unlicensed"]
    path = tmp_path / "kit.zip"
    path.write_bytes(fetch_kit(client_for(licensor=s.licensor), s.pk))

    # when / then
    assert verify(path) == (0, "kit verified: 2 lines, total 220.00 USD\n")
