"""Reads of the licensing catalog."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth.models import Permission, User
from django.db.models import Q

from licensing.models import Agreement, Host, License, LicensedModel, LicenseVersion, TermsBase
from licensing.rating import terms_in_force


def license_terms_in_force(
    *, license: License, host: Host | None, at: datetime
) -> TermsBase | None:
    """The terms that rate `host`'s usage of `license` at `at` (`licensing.rating.terms_in_force`
    over the catalog rows): the host's agreement in force, else the public version in force,
    else None (the license is not yet in force)."""
    versions = list(LicenseVersion.objects.filter(license=license, effective_from__lte=at))
    agreements: list[Agreement] = []
    if host is not None:
        agreements = list(
            Agreement.objects.filter(host=host, license=license, effective_from__lte=at)
        )
    return terms_in_force(versions, agreements, at)


def model_resolve(name: str) -> LicensedModel | None:
    """A model by slug or alias."""
    return (
        LicensedModel.objects.filter(Q(slug=name) | Q(aliases__alias=name))
        .select_related("license", "licensor", "parent")
        .first()
    )


def model_terms_for_host(*, host: Host, at: datetime) -> list[dict[str, Any]]:
    """Every model with its licensor, the license that rates it and the terms in force for
    `host` at `at` (a row, or None): what `licensing.api.ModelOutput` renders."""
    models = LicensedModel.objects.select_related("licensor", "license", "parent").prefetch_related(
        "aliases"
    )
    out = []
    for model in models:
        license = model.effective_license()
        terms = license_terms_in_force(license=license, host=host, at=at)
        out.append(
            {
                "slug": model.slug,
                "name": model.name or model.slug,
                "licensor": model.licensor.slug,
                "license": license.slug,
                "parent": model.parent.slug if model.parent else None,
                "aliases": [a.alias for a in model.aliases.all()],
                "terms": terms,
            }
        )
    return out


def licensor_reviewer_permissions() -> list[Permission]:
    """The reviewer role: what a licensor's member (`LicensorMembership`) may do in the admin,
    view settlements and approve or dispute them (billing's admin shows them only their
    licensor's). Billing's permissions are named by their codenames, so nothing is imported."""
    return list(
        Permission.objects.filter(
            content_type__app_label="billing",
            codename__in=[
                "view_settlement",
                "change_settlement",
                "view_settlementline",
                "view_billingrun",
            ],
        )
    )


def licensor_reviewer_emails(*, licensor_id: int) -> list[str]:
    """The addresses of `licensor_id`'s reviewers, who are told about its settlements
    (billing/notifications.py): active staff users in its `LicensorMembership` who may decide
    its settlements (billing's `change_settlement`, given directly, through a group, or as a
    superuser) and have an email address. Sorted, each address once."""
    return licensors_reviewer_emails(licensor_ids=[licensor_id]).get(licensor_id, [])


def licensors_reviewer_emails(*, licensor_ids: Iterable[int]) -> dict[int, list[str]]:
    """`licensor_reviewer_emails` of many licensors in one query (a billing run's end tells
    every licensor with drafts); licensors without a reviewer are left out."""
    decides = Q(is_superuser=True)
    for via in ("user_permissions", "groups__permissions"):
        decides |= Q(
            **{
                f"{via}__content_type__app_label": "billing",
                f"{via}__codename": "change_settlement",
            }
        )
    rows = (
        User.objects.filter(licensor_membership__licensor_id__in=list(licensor_ids))
        .filter(is_active=True, is_staff=True)
        .filter(decides)
        .exclude(email="")
        .values_list("licensor_membership__licensor_id", "email")
    )
    found: dict[int, set[str]] = {}
    for licensor_id, email in rows:
        if email.strip():
            found.setdefault(licensor_id, set()).add(email.strip())
    return {licensor_id: sorted(emails) for licensor_id, emails in found.items()}
