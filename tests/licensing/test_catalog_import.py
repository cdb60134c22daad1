"""import_catalog: round trip, idempotency, every error named, nothing half-written, locks."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from licensing.catalog import CatalogError, catalog_import
from licensing.models import (
    Agreement,
    Host,
    License,
    LicensedModel,
    LicenseVersion,
    Licensor,
    ModelAlias,
)

DEMO = Path(__file__).resolve().parents[2] / "licensing" / "fixtures" / "demo_catalog.json"

pytestmark = pytest.mark.django_db


def catalog() -> dict[str, Any]:
    return {
        "licensors": [{"slug": "minimax", "name": "MiniMax", "email": "billing@example.com"}],
        "hosts": [{"slug": "fireworks", "name": "Fireworks AI", "currency": "USD"}],
        "licenses": [
            {
                "slug": "minimax-m27",
                "licensor": "minimax",
                "name": "MiniMax M2.7 License",
                "versions": [
                    {
                        "version": "2026-04-11",
                        "effective_from": "2026-04-11T00:00:00Z",
                        "currency": "USD",
                        "rules": [{"charge": {"type": "free"}}],
                        "minimum_per_month": None,
                        "cap_per_month": None,
                        "attribution": None,
                    },
                    {
                        "version": "2026-04-15",
                        "effective_from": "2026-04-15T00:00:00Z",
                        "currency": "USD",
                        "rules": [
                            {
                                "match": {"customer_category": ["commercial"]},
                                "charge": {"type": "revenue_share", "percent": "12"},
                            }
                        ],
                        "minimum_per_month": "10000.00",
                        "cap_per_month": None,
                        "attribution": "Built with MiniMax M2.7",
                    },
                ],
            }
        ],
        "models": [
            {
                "slug": "minimax-m2.7-fp8",
                "licensor": "minimax",
                "license": None,
                "aliases": [],
                "parent": "minimax-m2.7",
            },
            {
                "slug": "minimax-m2.7",
                "licensor": "minimax",
                "license": "minimax-m27",
                "aliases": ["MiniMaxAI/MiniMax-M2.7"],
                "parent": None,
            },
        ],
        "agreements": [
            {
                "host": "fireworks",
                "license": "minimax-m27",
                "version": "fw-2026-06",
                "effective_from": "2026-06-01T00:00:00Z",
                "currency": "USD",
                "rules": [{"charge": {"type": "revenue_share", "percent": "12"}}],
                "minimum_per_month": None,
                "cap_per_month": None,
            }
        ],
    }


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    return path


def counts() -> tuple[int, ...]:
    return tuple(
        m.objects.count()
        for m in (Licensor, Host, License, LicenseVersion, LicensedModel, ModelAlias, Agreement)
    )


def test_it_imports_every_kind_of_object(tmp_path: Path) -> None:
    # given a catalog file
    path = write(tmp_path, catalog())
    out = StringIO()

    # when it is imported
    call_command("import_catalog", str(path), stdout=out)

    # then every object is there with its fields
    version = LicenseVersion.objects.get(license__slug="minimax-m27", label="2026-04-15")
    assert version.effective_from == datetime(2026, 4, 15, tzinfo=UTC)
    assert version.minimum_per_month == Decimal("10000.00")
    assert version.attribution == "Built with MiniMax M2.7"
    assert version.rules[0]["charge"] == {"type": "revenue_share", "percent": "12"}
    derivative = LicensedModel.objects.get(slug="minimax-m2.7-fp8")
    assert derivative.parent.slug == "minimax-m2.7"
    assert derivative.effective_license().slug == "minimax-m27"
    assert list(ModelAlias.objects.values_list("alias", flat=True)) == ["MiniMaxAI/MiniMax-M2.7"]
    assert Agreement.objects.get().host.slug == "fireworks"
    assert "total: 8 created, 0 updated, 0 unchanged" in out.getvalue()


def test_it_is_idempotent(tmp_path: Path) -> None:
    # given a catalog imported once
    path = write(tmp_path, catalog())
    call_command("import_catalog", str(path), stdout=StringIO())
    before = counts()

    # when the same file is imported again
    out = StringIO()
    call_command("import_catalog", str(path), stdout=out)

    # then nothing changes and the report says so
    assert counts() == before
    assert "total: 0 created, 0 updated, 8 unchanged" in out.getvalue()


def test_it_updates_what_changed_and_counts_it() -> None:
    # given an imported catalog
    catalog_import(catalog())
    changed = catalog()
    changed["hosts"][0]["name"] = "Fireworks"
    changed["models"][1]["aliases"] = ["minimax/minimax-m2.7"]

    # when a changed catalog is imported
    report = catalog_import(changed)

    # then the host is updated and the aliases replaced
    assert report.updated["hosts"] == 1
    assert report.updated["models"] == 0
    assert Host.objects.get().name == "Fireworks"
    assert list(ModelAlias.objects.values_list("alias", flat=True)) == ["minimax/minimax-m2.7"]


def test_it_round_trips_the_demo_catalog() -> None:
    # given the demo catalog
    data = json.loads(DEMO.read_text())

    # when imported, then what the API shows as terms equals the file's terms
    catalog_import(data)
    for lic in data["licenses"]:
        for v in lic["versions"]:
            stored = LicenseVersion.objects.get(license__slug=lic["slug"], label=v["version"])
            shown = stored.terms_dict()
            assert shown["rules"] == v["rules"]
            assert shown["currency"] == v["currency"]
            assert shown["attribution"] == v["attribution"]
            for key in ("minimum_per_month", "cap_per_month"):
                assert (None if shown[key] is None else Decimal(shown[key])) == (
                    None if v[key] is None else Decimal(v[key])
                )


def test_an_invalid_file_lists_every_error_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    # given a catalog with several mistakes, one of them deep in a rule
    data = catalog()
    data["hosts"][0]["currency"] = "usd"
    data["licenses"][0]["versions"][1]["rules"][0]["charge"]["percent"] = "120"
    data["models"][1]["licensor"] = "nobody"
    path = write(tmp_path, data)
    err = StringIO()

    # when it is imported
    with pytest.raises(CommandError) as raised:
        call_command("import_catalog", str(path), stdout=StringIO(), stderr=err)

    # then every error is named by its path, and nothing was written
    assert "3 error(s); nothing was imported" in str(raised.value)
    lines = err.getvalue().splitlines()
    assert "hosts[0].currency: must be an ISO 4217 code such as USD" in lines
    assert (
        "licenses[0].versions[1].rules[0].charge.percent: must be a decimal from 0 to 100" in lines
    )
    assert "models[1].licensor: unknown licensor 'nobody'" in lines
    assert counts() == (0, 0, 0, 0, 0, 0, 0)


def test_a_locked_version_cannot_change() -> None:
    # given a version that has rated usage
    catalog_import(catalog())
    LicenseVersion.objects.filter(label="2026-04-15").update(locked_at=timezone.now())
    changed = catalog()
    changed["licenses"][0]["versions"][1]["rules"][0]["charge"]["percent"] = "15"
    changed["hosts"][0]["name"] = "Renamed"

    # when a catalog that changes it is imported
    with pytest.raises(CatalogError) as raised:
        catalog_import(changed)

    # then the import is refused whole, naming the version
    assert raised.value.errors == [
        "licenses[0].versions[1]: version '2026-04-15' has rated usage and is locked; "
        "add a new version instead"
    ]
    version = LicenseVersion.objects.get(label="2026-04-15")
    assert version.rules[0]["charge"]["percent"] == "12"
    assert Host.objects.get().name == "Fireworks AI"


def test_a_locked_version_imported_unchanged_is_fine() -> None:
    # given a locked version
    catalog_import(catalog())
    LicenseVersion.objects.update(locked_at=timezone.now())

    # when the same catalog is imported, plus a new version
    data = catalog()
    data["licenses"][0]["versions"].append(copy.deepcopy(data["licenses"][0]["versions"][1]))
    data["licenses"][0]["versions"][2].update(
        version="2026-11-01", effective_from="2026-11-01T00:00:00Z"
    )
    report = catalog_import(data)

    # then the new version is added and the locked ones stay
    assert report.created["versions"] == 1
    assert report.unchanged["versions"] == 2


def mutate(path: str, value: Any) -> dict[str, Any]:
    """A catalog with the node at `path` (dotted, with [i]) set to value (or removed)."""
    data = catalog()
    node: Any = data
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is KeyError:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("licensors[0].slug", "Not A Slug", "licensors[0].slug: must match"),
        ("licensors[0].name", KeyError, "licensors[0].name: is required"),
        ("licensors[0].email", "nope", "licensors[0].email: must be an email address"),
        ("licensors[0].extra", 1, "licensors[0].extra: unknown field"),
        ("hosts[0].currency", "XXX1", "hosts[0].currency: must be an ISO 4217 code"),
        ("licenses[0].licensor", "ghost", "licenses[0].licensor: unknown licensor 'ghost'"),
        (
            "licenses[0].versions[0].effective_from",
            "2026-04-11",
            "licenses[0].versions[0].effective_from: must carry a UTC offset",
        ),
        (
            "licenses[0].versions[0].effective_from",
            "yesterday",
            "licenses[0].versions[0].effective_from: must be an RFC 3339 timestamp",
        ),
        (
            "licenses[0].versions[1].version",
            "2026-04-11",
            "licenses[0].versions[1].version: duplicate version '2026-04-11'",
        ),
        (
            "licenses[0].versions[1].minimum_per_month",
            10000.0,
            "licenses[0].versions[1].minimum_per_month:",
        ),
        (
            "licenses[0].versions[1].cap_per_month",
            "5000",
            "licenses[0].versions[1].cap_per_month: must not be below minimum_per_month",
        ),
        (
            "licenses[0].versions[1].attribution",
            7,
            "licenses[0].versions[1].attribution: must be a string or null",
        ),
        (
            "licenses[0].versions[1].rules[0].charge.type",
            "royalty",
            "licenses[0].versions[1].rules[0].charge.type:",
        ),
        (
            "licenses[0].versions[1].rules[0].match.customer_category",
            ["robots"],
            "licenses[0].versions[1].rules[0].match.customer_category",
        ),
        (
            "models[1].aliases[0]",
            "minimax-m2.7-fp8",
            "models[1].aliases[0]: 'minimax-m2.7-fp8' is already a model's slug",
        ),
        ("models[0].parent", "nothing", "models[0].parent: unknown model 'nothing'"),
        ("models[1].license", None, "models[1].license: a model needs a license"),
        ("agreements[0].host", "ghost", "agreements[0].host: unknown host 'ghost'"),
        ("agreements[0].rules", "free", "agreements[0].rules:"),
    ],
)
def test_it_names_the_bad_node(path: str, value: Any, error: str) -> None:
    # given a catalog with one bad node; when imported; then the error names that node
    with pytest.raises(CatalogError) as raised:
        catalog_import(mutate(path, value))
    assert any(e.startswith(error) for e in raised.value.errors), raised.value.errors
    assert counts() == (0, 0, 0, 0, 0, 0, 0)


def test_a_licensor_or_host_given_twice_is_refused_and_its_email_checked() -> None:
    # given a file that names the licensor and the host twice, the second host with a bad email
    data = catalog()
    data["licensors"].append({"slug": "minimax", "name": "MiniMax again"})
    data["hosts"].append(
        {"slug": "fireworks", "name": "Fireworks again", "currency": "USD", "email": "nope"}
    )

    # when imported, then both duplicates and the email are named, in file order, and nothing
    # is written
    with pytest.raises(CatalogError) as raised:
        catalog_import(data)
    assert raised.value.errors == [
        "licensors[1].slug: duplicate licensor 'minimax'",
        "hosts[1].email: must be an email address",
        "hosts[1].slug: duplicate host 'fireworks'",
    ]
    assert counts() == (0, 0, 0, 0, 0, 0, 0)


def test_an_alias_cannot_belong_to_two_models() -> None:
    # given a model that owns an alias
    catalog_import(catalog())
    data = catalog()
    data["models"].append(
        {
            "slug": "other",
            "licensor": "minimax",
            "license": "minimax-m27",
            "aliases": ["MiniMaxAI/MiniMax-M2.7"],
        }
    )

    # when another model claims it, then the import is refused
    with pytest.raises(CatalogError) as raised:
        catalog_import(data)
    assert raised.value.errors == [
        "models[2].aliases[0]: 'MiniMaxAI/MiniMax-M2.7' is already an alias of 'minimax-m2.7'"
    ]


def test_parents_may_not_form_a_cycle() -> None:
    data = catalog()
    data["models"][1]["license"] = None
    data["models"][1]["parent"] = "minimax-m2.7-fp8"
    with pytest.raises(CatalogError) as raised:
        catalog_import(data)
    assert "models[0].parent: parents form a cycle" in raised.value.errors


def test_a_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("import_catalog", str(path))
