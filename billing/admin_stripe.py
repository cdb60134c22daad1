"""Stripe events in the admin: read-only, for operators (the reviewer role,
`licensing.selectors.licensor_reviewer_permissions`, has no permission here)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.models import StripeEvent


class MismatchedFilter(admin.SimpleListFilter):
    """Payment events that did not match the invoice we sent: they wait for an operator."""

    title = "payment mismatch"
    parameter_name = "mismatched"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "mismatched (not posted)"), ("no", "matched or not a payment")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.exclude(mismatch="")
        if self.value() == "no":
            return queryset.filter(mismatch="")
        return queryset


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    """Read-only: the Stripe events received, and what processing each did. A payment event whose
    amount, currency or customer differ from our invoice shows its `mismatch`; it was not posted."""

    list_display = ["event_id", "type", "object_id", "outcome", "mismatch", "received_at"]
    list_filter = [MismatchedFilter, "type"]
    search_fields = ["event_id", "object_id"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in StripeEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
