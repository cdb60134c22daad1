"""Operators' log of the reviewers' email notifications (docs/notifications.md): read only, with
"send now" for those still unsent. Licensor reviewers have no permission here
(licensing.selectors.licensor_reviewer_permissions)."""

from __future__ import annotations

import smtplib
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.notification_models import Notification
from billing.notifications import notification_send


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "kind",
        "licensor",
        "subject",
        "recipients",
        "sent_at",
        "attempts",
    )
    list_filter = ("kind", ("sent_at", admin.EmptyFieldListFilter))
    list_select_related = ("licensor",)
    search_fields = ("subject", "licensor__slug")
    readonly_fields = [f.name for f in Notification._meta.fields]
    actions = ["send_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="to")
    def recipients(self, obj: Notification) -> str:
        return ", ".join(obj.to)

    @admin.action(description="Send now (those not sent yet)")
    def send_now(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        sent = failed = 0
        for pk in queryset.filter(sent_at__isnull=True).values_list("pk", flat=True):
            try:
                sent += notification_send(notification_id=pk)
            except (smtplib.SMTPException, OSError):
                failed += 1
        level = messages.WARNING if failed else messages.SUCCESS
        self.message_user(request, f"{sent} sent, {failed} failed.", level)
