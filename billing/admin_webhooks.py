"""Operators' view of outbound webhooks (docs/webhooks.md): endpoints and the delivery log, read
only, with "send again" for deliveries that failed or wait for their backoff. Licensor reviewers
have no permission here (billing.demo.licensor_reviewer_permissions)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from billing.webhook_models import WebhookDelivery, WebhookEndpoint


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(_ReadOnly):
    list_display = ("url", "owner", "events", "created_at")
    list_select_related = ("host", "licensor")
    search_fields = ("url", "host__slug", "licensor__slug")
    exclude = ("secret",)

    @admin.display(description="owner")
    def owner(self, obj: WebhookEndpoint) -> str:
        return f"host:{obj.host.slug}" if obj.host else f"licensor:{obj.licensor.slug}"  # type: ignore[union-attr]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnly):
    list_display = (
        "event_id",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", "event__type")
    list_select_related = ("event", "endpoint")
    search_fields = ("event__id", "endpoint__url")
    actions = ["send_again"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="type")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    @admin.action(description="Send again now (the same event id)")
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = queryset.exclude(status=WebhookDelivery.Status.SUCCEEDED).update(
            status=WebhookDelivery.Status.PENDING, next_attempt_at=timezone.now()
        )
        self.message_user(request, f"{count} deliveries due now.", messages.SUCCESS)
