"""A read-only journal browser: the books are append-only, so the admin adds, changes and
deletes nothing (the triggers would refuse it anyway); corrections are reversals, posted by
services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from ledger.models import Account, JournalEntry, Posting


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PartyFilter(admin.SimpleListFilter):
    """Entries that touch a party's accounts: a host, a licensor, or the platform."""

    title = "party"
    parameter_name = "party"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        options = [("platform", "Platform")]
        seen: set[str] = set()
        for account in Account.objects.select_related("host", "licensor").order_by("id"):
            if account.host_id is not None:
                key, label = f"host:{account.host_id}", f"Host: {account.host}"
            elif account.licensor_id is not None:
                key, label = f"licensor:{account.licensor_id}", f"Licensor: {account.licensor}"
            else:
                continue
            if key not in seen:
                seen.add(key)
                options.append((key, label))
        return options

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if value == "platform":
            accounts = Account.objects.filter(host__isnull=True, licensor__isnull=True)
        else:
            kind, _, pk = value.partition(":")
            if kind not in {"host", "licensor"} or not pk.isdigit():
                return queryset.none()
            accounts = Account.objects.filter(**{f"{kind}_id": int(pk)})
        return queryset.filter(postings__account__in=accounts).distinct()


class CurrencyFilter(admin.SimpleListFilter):
    title = "currency"
    parameter_name = "currency"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        currencies = Account.objects.values_list("currency", flat=True).distinct()
        return [(c, c) for c in sorted(currencies)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if not self.value():
            return queryset
        return queryset.filter(postings__currency=self.value()).distinct()


class PostingInline(ReadOnlyMixin, admin.TabularInline):  # type: ignore[type-arg]
    model = Posting
    fields = ("account", "amount", "currency")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "sequence",
        "created_at",
        "reference_type",
        "reference_id",
        "memo",
        "reverses",
        "idempotency_key",
    )
    list_filter = (PartyFilter, CurrencyFilter, "reference_type")
    search_fields = ("idempotency_key", "reference_id", "memo")
    readonly_fields = (
        "sequence",
        "created_at",
        "idempotency_key",
        "reference_type",
        "reference_id",
        "memo",
        "reverses",
        "prev_hash",
        "hash",
    )
    fields = readonly_fields
    inlines = [PostingInline]
    list_select_related = ("reverses",)
    ordering = ("-sequence",)
    date_hierarchy = "created_at"


@admin.register(Account)
class AccountAdmin(ReadOnlyMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "owner_label", "kind", "currency", "created_at")
    list_filter = ("kind", "currency")
    readonly_fields = ("licensor", "host", "kind", "currency", "created_at")
    fields = readonly_fields
