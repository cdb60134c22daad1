"""Billing runs in the admin: read-only; a licensor's reviewer sees only the runs that billed their
licensor, without the platform-wide counts or errors (docs/security.md)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from billing.admin_scope import reviewer_licensor_id
from billing.models import BillingRun

# What a licensor's reviewer is shown of a failed run instead of its error: the error is the
# platform's (any pair's exception, which may quote another host's agreement label or ids).
REVIEWER_RUN_ERROR = "The run did not finish; the platform operators have its error."


@admin.register(BillingRun)
class BillingRunAdmin(admin.ModelAdmin):
    """Read-only: an operator watches a run advance (pairs done of total) and reads its error.

    A licensor's reviewer sees the runs that billed their licensor (a pair of the run is
    theirs), with the progress of their own pairs only, and none of the platform-wide counts or
    the error: those describe other licensors' and hosts' billing. Runs matter to a reviewer (is
    this month's draft computed, is a re-run under way), so they are shown rather than hidden."""

    list_display = [
        "id",
        "period",
        "status",
        "progress",
        "groups_count",
        "settlements_written",
        "settlements_settled",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status", "period"]
    ordering = ["-started_at"]

    reviewer_fields = ["id", "period", "status", "progress", "started_at", "finished_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[BillingRun]:
        qs = super().get_queryset(request)
        licensor_id = reviewer_licensor_id(request)
        if licensor_id is None:
            return qs
        # The reviewer's own pairs, counted in the query: the display methods below see only the
        # object, and a ModelAdmin is shared between requests (no per-request state on it).
        own = Q(pairs__licensor_id=licensor_id)
        return qs.annotate(
            reviewer_pairs_total=Count("pairs", filter=own),
            reviewer_pairs_done=Count("pairs", filter=own & Q(pairs__done_at__isnull=False)),
        ).filter(reviewer_pairs_total__gt=0)

    def get_list_display(self, request: HttpRequest) -> Any:
        if reviewer_licensor_id(request) is not None:
            return [*self.reviewer_fields, "error_display"]
        return super().get_list_display(request)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        if reviewer_licensor_id(request) is not None:
            return [*self.reviewer_fields, "error_display"]
        return [f.name for f in BillingRun._meta.fields] + ["progress"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.get_fields(request, obj)

    @admin.display(description="progress (pairs)")
    def progress(self, obj: BillingRun) -> str:
        own: Any = obj  # a reviewer's queryset annotates their own pairs' counts
        if hasattr(own, "reviewer_pairs_total"):
            return f"{own.reviewer_pairs_done}/{own.reviewer_pairs_total}"
        return obj.progress

    @admin.display(description="error")
    def error_display(self, obj: BillingRun) -> str:
        if obj.error and hasattr(obj, "reviewer_pairs_total"):
            return REVIEWER_RUN_ERROR
        return obj.error

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
