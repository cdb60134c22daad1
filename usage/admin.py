"""Read-only admin: usage records and claims are append-only, so nothing here edits or deletes."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from usage.models import PeriodClose, UsageRecord, UsageRejection


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "event_id",
        "host",
        "model",
        "occurred_at",
        "customer_category",
        "revenue",
        "currency",
        "late",
        "corrects",
    ]
    list_filter = ["late", "customer_category", "currency"]
    search_fields = ["event_id", "corrects"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False  # a COUNT(*) over every partition on each page is too slow


@admin.register(PeriodClose)
class PeriodCloseAdmin(ReadOnlyAdmin):
    list_display = ["host", "licensor", "period", "closed_at"]


@admin.register(UsageRejection)
class UsageRejectionAdmin(ReadOnlyAdmin):
    """Records refused at ingestion, for operators helping a host (kept 30 days)."""

    list_display = ["received_at", "host", "endpoint", "event_id", "index", "errors"]
    list_filter = ["endpoint", "host"]
    search_fields = ["event_id"]
    date_hierarchy = "received_at"
    list_select_related = ["host"]
