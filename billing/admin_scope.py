"""Who an admin user reviews for, shared by every billing admin module (settlements, runs, payouts).

A staff user linked to a licensor (`licensing.LicensorMembership`) is that licensor's reviewer and
sees only its objects; a superuser sees all (docs/security.md).
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpRequest

from billing.models import Settlement


def reviewer_licensor_id(request: HttpRequest) -> int | None:
    """The licensor of a licensor's reviewer (a staff user with a `LicensorMembership`), or None
    for an operator (a superuser, or staff without membership)."""
    if request.user.is_superuser:
        return None
    membership = getattr(request.user, "licensor_membership", None)
    return None if membership is None else int(membership.licensor_id)


def licensor_scope(request: HttpRequest, qs: QuerySet[Settlement]) -> QuerySet[Settlement]:
    """The settlements this admin user may see: all for a superuser, their licensor's for a
    member, none for anyone else."""
    user = request.user
    if user.is_superuser:
        return qs
    membership = getattr(user, "licensor_membership", None)
    if membership is None:
        return qs.none()
    return qs.filter(licensor_id=membership.licensor_id)
