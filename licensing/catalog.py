"""The catalog file (docs/catalog.md): validation with the path of every bad node
(`licensing.catalog_validation`), and an idempotent upsert in one transaction.

`catalog_import(data)` validates the whole document first and lists every error; only a valid
document is written, and it is written in one transaction, so an invalid file changes nothing.
Terms that have rated usage are locked: a catalog that would change one is refused whole.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction

from licensing.catalog_validation import Errors, Terms, parse_catalog
from licensing.models import (
    Agreement,
    Host,
    License,
    LicensedModel,
    LicenseVersion,
    Licensor,
    ModelAlias,
    TermsBase,
)

KINDS = ("licensors", "hosts", "licenses", "versions", "models", "agreements")


class CatalogError(Exception):
    """An invalid catalog: `errors` lists every problem as '<path>: <message>'."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class ImportReport:
    """What an import changed, per kind of object."""

    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        out = []
        for kind in KINDS:
            out.append(
                f"{kind}: {self.created[kind]} created, {self.updated[kind]} updated, "
                f"{self.unchanged[kind]} unchanged"
            )
        out.append(
            f"total: {sum(self.created.values())} created, {sum(self.updated.values())} "
            f"updated, {sum(self.unchanged.values())} unchanged"
        )
        return out


# --- writing ------------------------------------------------------------------------------


def _upsert(
    report: ImportReport, kind: str, model: Any, lookup: dict[str, Any], values: dict[str, Any]
) -> Any:
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        report.created[kind] += 1
        return model.objects.create(**lookup, **values)
    changed = [k for k, v in values.items() if getattr(obj, k) != v]
    if changed:
        for k in changed:
            setattr(obj, k, values[k])
        obj.save(update_fields=changed)
        report.updated[kind] += 1
    else:
        report.unchanged[kind] += 1
    return obj


def _terms_values(terms: Terms) -> dict[str, Any]:
    return {
        "effective_from": terms.effective_from,
        "currency": terms.currency,
        "rules": terms.rules,
        "minimum_per_month": terms.minimum_per_month,
        "cap_per_month": terms.cap_per_month,
        "attribution": terms.attribution,
        "review_days": terms.review_days,
    }


def _upsert_terms(
    report: ImportReport,
    kind: str,
    model: type[TermsBase],
    path: str,
    lookup: dict[str, Any],
    terms: Terms,
    errors: Errors,
) -> None:
    existing = model.objects.filter(**lookup).first()  # type: ignore[attr-defined]
    values = _terms_values(terms)
    if existing is not None and existing.is_locked:
        if any(_differs(getattr(existing, k), v) for k, v in values.items()):
            errors.add(
                path,
                f"{kind[:-1]} {terms.label!r} has rated usage and is locked; "
                "add a new version instead",
            )
        else:
            report.unchanged[kind] += 1
        return
    if existing is not None:
        values = {k: v for k, v in values.items() if _differs(getattr(existing, k), v)}
        if not values:
            report.unchanged[kind] += 1
            return
        for k, v in values.items():
            setattr(existing, k, v)
        existing.save(update_fields=list(values))
        report.updated[kind] += 1
        return
    model.objects.create(**lookup, **values)  # type: ignore[attr-defined]
    report.created[kind] += 1


def _differs(current: Any, new: Any) -> bool:
    if isinstance(current, Decimal) and isinstance(new, Decimal):
        return current.compare_total(new) != 0 and current != new
    return bool(current != new)


def catalog_import(data: Any) -> ImportReport:
    """Validate and upsert a catalog document in one transaction. Raises CatalogError (and
    writes nothing) when anything is wrong."""
    errors = Errors()
    parsed = parse_catalog(data, errors)
    if errors.items:
        raise CatalogError(errors.items)
    report = ImportReport()
    with transaction.atomic():
        for kind, model, rows in (
            ("licensors", Licensor, parsed.licensors),
            ("hosts", Host, parsed.hosts),
        ):
            for raw in rows:
                values = {k: v for k, v in raw.items() if k != "slug"}
                _upsert(report, kind, model, {"slug": raw["slug"]}, values)
        licensors = {lic.slug: lic for lic in Licensor.objects.all()}
        for i, (raw, versions) in enumerate(parsed.licenses):
            license = _upsert(
                report,
                "licenses",
                License,
                {"slug": raw["slug"]},
                {"name": raw["name"], "licensor": licensors[raw["licensor"]]},
            )
            for j, terms in enumerate(versions):
                _upsert_terms(
                    report,
                    "versions",
                    LicenseVersion,
                    f"licenses[{i}].versions[{j}]",
                    {"license": license, "label": terms.label},
                    terms,
                    errors,
                )
        licenses = {lic.slug: lic for lic in License.objects.all()}
        for raw in _parents_first(parsed.models):
            parent = LicensedModel.objects.get(slug=raw["parent"]) if raw["parent"] else None
            model = _upsert(
                report,
                "models",
                LicensedModel,
                {"slug": raw["slug"]},
                {
                    "name": raw["name"],
                    "licensor": licensors[raw["licensor"]],
                    "license": licenses[raw["license"]] if raw["license"] else None,
                    "parent": parent,
                },
            )
            if raw["aliases"] is not None:
                wanted = set(raw["aliases"])
                current = set(model.aliases.values_list("alias", flat=True))
                if wanted != current:
                    model.aliases.exclude(alias__in=wanted).delete()
                    ModelAlias.objects.bulk_create(
                        [ModelAlias(model=model, alias=a) for a in sorted(wanted - current)]
                    )
        hosts = {h.slug: h for h in Host.objects.all()}
        for i, (raw, terms) in enumerate(parsed.agreements):
            _upsert_terms(
                report,
                "agreements",
                Agreement,
                f"agreements[{i}]",
                {
                    "host": hosts[raw["host"]],
                    "license": licenses[raw["license"]],
                    "label": terms.label,
                },
                terms,
                errors,
            )
        if errors.items:
            # A locked version would change: refuse the whole file, write nothing.
            transaction.set_rollback(True)
            raise CatalogError(errors.items)
    return report


def _parents_first(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The file's models ordered so that a parent is written before its derivatives (a
    derivative's row needs its parent's id; cycles were refused by validation)."""
    by_slug = {m["slug"]: m for m in models}
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()

    def place(model: dict[str, Any]) -> None:
        if model["slug"] in placed:
            return
        parent = by_slug.get(model["parent"]) if model["parent"] else None
        if parent is not None:
            place(parent)
        placed.add(model["slug"])
        ordered.append(model)

    for model in models:
        place(model)
    return ordered
