"""Payouts in the admin (docs/payouts.md). A licensor's reviewer sees only its own licensor's
payouts, read-only; an operator sees all, and records a pending manual payout as paid with the
bank reference ("Record bank payment" on its page; needs `billing.record_payout`, never offered to
a reviewer). Nothing else is edited here: a payout's amounts are what its run computed."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from billing.admin_scope import reviewer_licensor_id
from billing.models import Payout, PayoutStatus
from billing.payouts import PaymentError, money, payout_mark_paid


class RecordPaymentForm(forms.Form):
    reference = forms.CharField(max_length=200, label="Bank reference", strip=True)


_FIELDS: list[str] = [
    "id",
    "licensor",
    "currency",
    "day",
    "rail",
    "status",
    "gross_display",
    "fee_display",
    "withholding_display",
    "carried_display",
    "net_display",
    "reference",
    "settlements_display",
    "created_at",
    "paid_at",
    "failed_at",
    "error",
    "record_link",
]


@admin.register(Payout)
class PayoutAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "licensor",
        "currency",
        "day",
        "rail",
        "status",
        "net_display",
        "reference",
        "created_at",
        "paid_at",
    ]
    list_filter = ["status", "rail", "currency"]
    search_fields = ["id", "reference", "licensor__slug"]
    fields = tuple(_FIELDS)
    readonly_fields = _FIELDS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Payout]:
        qs = super().get_queryset(request).select_related("licensor")
        licensor_id = reviewer_licensor_id(request)
        return qs if licensor_id is None else qs.filter(licensor_id=licensor_id)

    def _amount(self, obj: Payout, minor: int) -> str:
        return f"{money(minor, obj.currency)} {obj.currency}"

    @admin.display(description="gross")
    def gross_display(self, obj: Payout) -> str:
        return self._amount(obj, obj.gross_minor)

    @admin.display(description="platform fee")
    def fee_display(self, obj: Payout) -> str:
        return self._amount(obj, obj.platform_fee_minor)

    @admin.display(description="withholding")
    def withholding_display(self, obj: Payout) -> str:
        return self._amount(obj, obj.withholding_minor)

    @admin.display(description="carried forward")
    def carried_display(self, obj: Payout) -> str:
        return self._amount(obj, obj.carried_forward_minor)

    @admin.display(description="net")
    def net_display(self, obj: Payout) -> str:
        return self._amount(obj, obj.net_minor)

    @admin.display(description="settlements")
    def settlements_display(self, obj: Payout) -> str:
        rows = obj.items.select_related("settlement__host").order_by("settlement__period")
        return ", ".join(
            f"{i.settlement.host.slug} {i.settlement.period}: {money(i.gross_minor, obj.currency)}"
            for i in rows
        )

    @admin.display(description="record")
    def record_link(self, obj: Payout) -> str:
        if obj.status != PayoutStatus.PENDING or obj.rail != "manual":
            return "-"
        url = reverse("admin:billing_payout_record", args=[obj.pk])
        return format_html('<a class="button" href="{}">Record bank payment</a>', url)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # read-only; the one write is "Record bank payment"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A licensor's reviewer always sees its own licensor's payouts (get_queryset scopes
        them): what it is paid is part of the settlements it reviews."""
        if getattr(request.user, "licensor_membership", None) is not None:
            return bool(request.user.is_active and request.user.is_staff)
        return super().has_view_permission(request, obj)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request) or super().has_module_permission(request)

    def has_record_permission(self, request: HttpRequest) -> bool:
        """Operators only: a licensor's reviewer never records its own payout as paid."""
        if getattr(request.user, "licensor_membership", None) is not None:
            return False
        return bool(request.user.has_perm("billing.record_payout"))

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<uuid:object_id>/record/",
                self.admin_site.admin_view(self.record_view),
                name="billing_payout_record",
            ),
            path(
                "<uuid:object_id>/statement.csv",
                self.admin_site.admin_view(self.statement_view),
                name="billing_payout_statement_csv",
            ),
        ]
        return own + super().get_urls()

    def statement_view(self, request: HttpRequest, object_id: Any) -> HttpResponse:
        """The payout's CSV statement, the same bytes as the API's, for a logged-in user (a
        reviewer has a session, no API key); another licensor's payout is 404."""
        # Imported on the first download, not with the admin: the API module pulls in DRF and
        # drf-spectacular, which no command needs at start-up (docs/performance.md).
        from billing.payouts_api import statement_response

        if not self.has_view_permission(request):
            raise PermissionDenied
        payout = get_object_or_404(self.get_queryset(request), pk=object_id)
        return statement_response(payout)

    def record_view(self, request: HttpRequest, object_id: Any) -> HttpResponse:
        if not self.has_record_permission(request):
            raise PermissionDenied
        payout = get_object_or_404(self.get_queryset(request), pk=object_id)
        change_url = reverse("admin:billing_payout_change", args=[payout.pk])
        form = RecordPaymentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            if payout.rail != "manual":
                self.message_user(
                    request, "Only a manual payout is recorded by hand.", messages.ERROR
                )
                return HttpResponseRedirect(change_url)
            try:
                payout_mark_paid(payout_id=str(payout.pk), reference=form.cleaned_data["reference"])
            except PaymentError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request, f"Recorded payout {payout.pk} as paid.", messages.SUCCESS
                )
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Record bank payment",
            "payout": payout,
            "net": money(payout.net_minor, payout.currency),
            "form": form,
        }
        return TemplateResponse(request, "admin/billing/payout/record.html", context)
