"""The catalog in the admin: search, filters, inlines for versions and aliases. Terms that have
rated usage are locked and shown read-only; API keys are issued by `create_api_key` (the key
is shown once) and revoked here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from licensing.models import (
    Agreement,
    ApiKey,
    Host,
    License,
    LicensedModel,
    LicenseVersion,
    Licensor,
    LicensorMembership,
    ModelAlias,
)
from licensing.payout_terms import parse_payout


class LockedTermsForm(forms.ModelForm):
    """Every field disabled once the terms are locked: a disabled field ignores what is posted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.is_locked:
            for f in self.fields.values():
                f.disabled = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance.pk and self.instance.is_locked and cleaned.get("DELETE"):
            raise forms.ValidationError("These terms have rated usage and cannot be deleted.")
        return cleaned


class LicenseVersionInline(admin.StackedInline):
    model = LicenseVersion
    form = LockedTermsForm
    extra = 0
    fields = [
        "label",
        "effective_from",
        "currency",
        "rules",
        "minimum_per_month",
        "cap_per_month",
        "attribution",
        "review_days",
        "locked_at",
    ]
    readonly_fields = ["locked_at"]


class LicensorForm(forms.ModelForm):
    """The payout fields are checked by the catalog's own validator (licensing/payout_terms.py),
    so the admin accepts exactly what `import_catalog` does; errors name the field."""

    class Meta:
        model = Licensor
        fields = [
            "slug",
            "name",
            "email",
            "payout_rail",
            "payout_stripe_account",
            "payout_minimum",
            "payout_withholding_percent",
            "payout_platform_fee_percent",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        node = {
            "rail": cleaned.get("payout_rail"),
            "stripe_account": cleaned.get("payout_stripe_account") or None,
            "minimum": cleaned.get("payout_minimum") or {},
            "withholding_percent": cleaned.get("payout_withholding_percent"),
            "platform_fee_percent": cleaned.get("payout_platform_fee_percent"),
        }
        _, errors = parse_payout(node, "payout")
        for error in errors:
            where, _, message = error.partition(": ")
            key = where.split(".")[1] if "." in where else "rail"
            self.add_error(f"payout_{key}", f"{where}: {message}")
        return cleaned


@admin.register(Licensor)
class LicensorAdmin(admin.ModelAdmin):
    """Operators only change a licensor (its payout rail, account, fee and withholding decide
    where money goes): a licensor's reviewer may at most view it."""

    form = LicensorForm
    list_display = ["slug", "name", "email", "payout_rail", "created_at"]
    list_filter = ["payout_rail"]
    search_fields = ["slug", "name", "email"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if getattr(request.user, "licensor_membership", None) is not None:
            return False
        return super().has_change_permission(request, obj)


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "currency",
        "default_customer_category",
        "stripe_customer_id",
        "created_at",
    ]
    list_filter = ["currency"]
    search_fields = ["slug", "name", "email"]


@admin.register(License)
class LicenseAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "licensor", "created_at"]
    list_filter = ["licensor"]
    search_fields = ["slug", "name", "licensor__name"]
    inlines = [LicenseVersionInline]


class TermsAdmin(admin.ModelAdmin):
    form = LockedTermsForm
    readonly_fields = ["locked_at", "created_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj and obj.is_locked)


@admin.register(LicenseVersion)
class LicenseVersionAdmin(TermsAdmin):
    list_display = ["license", "label", "effective_from", "currency", "locked_at"]
    list_filter = ["license__licensor", "currency", ("locked_at", admin.EmptyFieldListFilter)]
    search_fields = ["label", "license__slug", "license__name"]


@admin.register(Agreement)
class AgreementAdmin(TermsAdmin):
    list_display = ["host", "license", "label", "effective_from", "currency", "locked_at"]
    list_filter = ["host", "license", "currency"]
    search_fields = ["label", "host__slug", "license__slug"]


class ModelAliasInline(admin.TabularInline):
    model = ModelAlias
    extra = 1


@admin.register(LicensedModel)
class LicensedModelAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "licensor", "license", "parent"]
    list_filter = ["licensor", "license"]
    search_fields = ["slug", "name", "aliases__alias"]
    inlines = [ModelAliasInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[LicensedModel]:
        return super().get_queryset(request).select_related("licensor", "license", "parent")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "prefix",
        "kind",
        "host",
        "licensor",
        "name",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "host", "licensor"]
    search_fields = ["prefix", "name", "host__slug", "licensor__slug"]
    readonly_fields = ["prefix", "host", "licensor", "created_at", "last_used_at", "revoked_at"]
    fields = ["prefix", "name", "host", "licensor", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are issued by `manage.py create_api_key`, which shows the key once

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the row stays as a record of who held access

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(LicensorMembership)
class LicensorMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "licensor"]
    list_filter = ["licensor"]
    search_fields = ["user__username", "licensor__slug"]
